"""Fixtures of the remote-storage tests: one moto S3 server per session with a bucket per test, a Range-honouring
HTTP server per test, a fault proxy, and this process's storage settings reset after each test. Every server
listens on 127.0.0.1 and is stopped by its fixture."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import FaultProxy, RangeServer, moto_server, s3_env  # noqa: E402


@pytest.fixture(scope="session")
def moto():
    server, port = moto_server()
    yield port
    server.stop()


@pytest.fixture
def s3(moto, monkeypatch):
    """A fresh bucket on the moto server; -> 's3://<bucket>' (the client environment points at the server)."""
    import boto3

    for k, v in s3_env(moto).items():
        monkeypatch.setenv(k, v)
    from avpea_dist import storage

    storage.configure()  # drop filesystems made under another environment
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto}").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture
def http_server(tmp_path):
    """A Range-honouring HTTP server whose document root is ``tmp_path / 'www'``."""
    root = tmp_path / "www"
    root.mkdir()
    server = RangeServer(root)
    yield server
    server.stop()


@pytest.fixture
def proxy_to():
    """``proxy_to(port)`` -> a FaultProxy in front of that loopback port (stopped after the test)."""
    made = []

    def make(port: int) -> FaultProxy:
        p = FaultProxy(port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


@pytest.fixture(autouse=True)
def storage_defaults():
    from avpea_dist import storage

    yield
    storage.configure(**{f: getattr(storage.Settings(), f) for f in storage.Settings.__dataclass_fields__})
