"""The loopback guard of the test setup catches every way out, in this process and in children."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import httpx
import pytest
from conftest import offlimits_attempts

from heimdall_lab.kiwi.client import check_health
from heimdall_lab.receivers import DEFAULT_RECEIVERS

# The guard's error is a ConnectionRefusedError (a test process may have loaded the guard as
# sitecustomize before conftest imported it as netguard.sitecustomize: two module objects).
OffLimitsError = ConnectionRefusedError


def test_a_connection_outside_loopback_is_refused_and_recorded():
    with pytest.raises(OffLimitsError, match=r"off limits: .*192\.0\.2\.1"):
        socket.create_connection(("192.0.2.1", 8073), timeout=1)
    attempts = offlimits_attempts()
    assert len(attempts) == 1 and "192.0.2.1" in attempts[0]


def test_a_public_receiver_is_not_even_looked_up():
    rx = DEFAULT_RECEIVERS[0]
    with pytest.raises(httpx.ConnectError, match="off limits"):
        httpx.get(f"http://{rx.host}:{rx.port}/status", timeout=1)
    health = asyncio.run(check_health(rx, timeout=1))
    assert not health.reachable and "off limits" in health.error
    # Both attempts were seen, though the second was caught by the code under test.
    attempts = offlimits_attempts()
    assert len(attempts) == 2 and all(rx.host in a for a in attempts)


def test_loopback_is_allowed():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        port = server.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        socket.create_connection(("localhost", port), timeout=1).close()
    finally:
        server.close()
    assert offlimits_attempts() == []


def test_a_subprocess_is_guarded_too():
    code = "import socket; socket.create_connection(('198.51.100.7', 80), timeout=1)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "off limits" in proc.stderr
    attempts = offlimits_attempts()
    assert len(attempts) == 1 and "198.51.100.7" in attempts[0]


def test_a_datagram_may_learn_its_address_but_not_send():
    # Libraries connect a UDP socket to a public address to learn their own (nothing is sent).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.9", 53))
        assert offlimits_attempts() == []
        with pytest.raises(OffLimitsError, match="off limits"):
            s.send(b"x")
        with pytest.raises(OffLimitsError, match="off limits"):
            s.sendto(b"x", ("192.0.2.9", 53))
    assert len(offlimits_attempts()) == 2


def test_every_way_to_look_up_or_send_is_guarded():
    with pytest.raises(OffLimitsError, match="off limits"):
        socket.gethostbyname("example.invalid")
    with pytest.raises(OffLimitsError, match="off limits"):
        socket.gethostbyname_ex("example.invalid")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.9", 9))
        with pytest.raises(OffLimitsError):
            s.sendall(b"x")
        with pytest.raises(OffLimitsError):
            s.sendmsg([b"x"])
    assert len(offlimits_attempts()) == 4
    # This machine's own name is not outside (libraries look it up).
    assert socket.gethostbyname(socket.gethostname())
