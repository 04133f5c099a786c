"""Federation tests: real Redis, Kafka-protocol and MongoDB-wire servers per test."""
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "kafka: runs a real Kafka-protocol broker (Tansu)")
    config.addinivalue_line("markers", "mongodb: runs a real MongoDB-wire server (nx-27017)")


@pytest.fixture
def kafka_server(tmp_path):
    from support.kafka_server import KafkaServer, kafka_available
    ok, why = kafka_available()
    if not ok:
        pytest.skip(why)
    srv = KafkaServer(tmp_path / "kafka")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def mongo_server(tmp_path):
    from support.mongo_server import MongoServer, mongo_available
    ok, why = mongo_available()
    if not ok:
        pytest.skip(why)
    srv = MongoServer(tmp_path / "mongo")
    try:
        yield srv
    finally:
        srv.stop()
