"""RabbitMQ adapter against a real broker."""
import hashlib
import time

import pytest
from adapters_support import read_back

pika = pytest.importorskip("pika", reason="pika not installed: pip install 'flowcept[rabbitmq]'")
pytestmark = pytest.mark.slow


def _publish(url, n, first=0, big=False):
    c = pika.BlockingConnection(pika.URLParameters(url))
    ch = c.channel()
    ch.exchange_declare("sim", exchange_type="topic", durable=True)
    ch.queue_declare("app", durable=True)          # the application's own consumer queue
    ch.queue_bind("app", "sim", routing_key="#")
    t0 = time.perf_counter()
    for i in range(first, first + n):
        body = (b"B" * 1000) if big and i == first else (bytes([0xff, 0xfe, i % 256]) if i % 7 == 3
                                                          else f'{{"step": {i}}}'.encode())
        props = pika.BasicProperties(headers={"rank": i % 4}, content_type="application/json",
                                     message_id=f"m{i}" if i % 2 == 0 else None, timestamp=1700000000 + i)
        ch.basic_publish("sim", f"sim.step.{i % 3}", body, props)
    took = time.perf_counter() - t0
    c.close()
    return took


def _app_depth(url):
    c = pika.BlockingConnection(pika.URLParameters(url))
    n = c.channel().queue_declare("app", durable=True, passive=True).method.message_count
    c.close()
    return n


def test_one_record_per_message_across_restart(run_dir, session, broker, tmp_path):
    from flowcept.adapters.rabbitmq import RabbitmqAdapter
    _publish(broker.url, 0)                     # the exchange exists before the adapter binds
    a = RabbitmqAdapter(session, url=broker.url, exchange="sim", poll_interval=0.05).start(background=True)
    alone = _publish(broker.url, 20, first=0, big=True)
    deadline = time.monotonic() + 20
    while a.emitted < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    a.stop()
    assert a.emitted == 20 and a.errors == 0
    _publish(broker.url, 5, first=20)           # while the adapter is down: kept in its queue
    b = RabbitmqAdapter(session, url=broker.url, exchange="sim").start()
    assert b.poll() == 5
    b.stop()
    c = RabbitmqAdapter(session, url=broker.url, exchange="sim").start()
    assert c.poll() == 0                        # nothing acknowledged comes back
    c.stop()
    assert _app_depth(broker.url) == 25         # the application's queue got every message
    assert alone < 10

    tasks = read_back(run_dir, "rabbitmq:")
    assert len(tasks) == 25 and len({t["task_id"] for t in tasks}) == 25
    by_rk = {}
    for t in tasks:
        by_rk.setdefault(t["used"].get("message_id"), []).append(t)
    m4 = by_rk["m4"][0]["used"]
    assert m4["routing_key"] == "sim.step.1" and m4["headers"] == {"rank": 0}
    assert m4["body"] == {"size": 11, "sha256": hashlib.sha256(b'{"step": 4}').hexdigest(),
                          "preview": '{"step": 4}', "truncated": False}
    assert m4["content_type"] == "application/json" and m4["exchange"] == "sim"
    m0 = by_rk["m0"][0]["used"]["body"]
    assert m0["size"] == 1000 and m0["truncated"] and len(m0["preview"]) == 256
    binary = [t for t in tasks if t["used"]["body"]["size"] == 3]
    assert len(binary) == 4 and all("preview" not in t["used"]["body"] for t in binary)
    assert by_rk["m4"][0]["start_ns"] == (1700000000 + 4) * 10**9
    assert tasks[0]["activity_id"] == "rabbitmq:sim"
