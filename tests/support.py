"""Test helpers shared by the test modules: free ports, an S3 server, a TCP fault proxy.

Imported as ``import support`` (pytest puts ``tests/`` on the path); fixtures stay in
``conftest.py``. moto and boto3 are imported inside the S3 helpers only.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REGION = "eu-central-1"
FAKE_KEY = "HEIMDALLTESTKEY00000"
FAKE_SECRET = "heimdall-fake-secret-do-not-log-0123"


def free_port() -> int:
    """A TCP port nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_home() -> Path:
    """A fresh state directory for an embedded PostgreSQL (readable by its OS user)."""
    home = Path(tempfile.mkdtemp(prefix="heimdall-db-test-"))
    home.chmod(0o755)
    return home


# -- S3: moto's server, in-process on loopback, as s3fs's own tests do ------------------------


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Run moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Fake credentials and the endpoint, from the environment as in production."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("HEIMDALL_S3_ENDPOINT_URL", endpoint)


def make_bucket(endpoint: str) -> str:
    import boto3

    bucket = f"iq-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return bucket


# -- a real TCP fault injector between a client and a server ----------------------------------


class TcpProxy:
    """Forward a loopback port to a server, and cut or refuse connections on demand.

    Real sockets both ways: the client sees exactly what a lost network gives it (a reset
    connection, or a refused one while the proxy is down).
    """

    def __init__(self, target_port: int, cut_on: bytes | None = None) -> None:
        self.target_port = target_port
        self.cut_on = cut_on  # cut every connection the first time a client sends this
        self.cuts = 0
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.cut()

    def cut(self) -> None:
        """Reset every open connection."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream and self.cut_on is not None and self.cut_on in data:
                    self.cut_on = None
                    self.cuts += 1
                    self.cut()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A database of its own on a server, migrated, with the default receivers (as
    ``heimdall-lab db migrate`` leaves one); dropped afterwards. Yields its URL."""
    import sqlalchemy as sa

    from heimdall_lab import db

    url = sa.engine.make_url(server_url)
    name = f"fresh_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        target = url.set(database=name).render_as_string(hide_password=False)
        engine = db.get_engine(target)
        db.seed_receivers(engine)
        engine.dispose()
        yield target
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
