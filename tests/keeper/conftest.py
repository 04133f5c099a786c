import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def redis_server(tmp_path):
    from support.redis_server import RedisServer, redis_available
    ok, why = redis_available()
    if not ok:
        pytest.skip(why)
    srv = RedisServer(tmp_path / "redis")
    try:
        yield srv
    finally:
        srv.stop()
