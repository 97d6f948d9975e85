"""Manners on other people's receivers, end to end against the emulator over loopback.

TLS, the identity sent, typed reasons for every way a KiwiSDR refuses or ends a session, no
retry storm, the per-host backoff and cool-down, and the limit of connections at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hostile import HostileServer

from heimdall_lab.emulate.scenario import Scenario, Site
from heimdall_lab.emulate.server import (
    INACTIVITY_MIN,
    REDIRECT_TO,
    TIME_LIMIT_MIN,
    Emulator,
    Fault,
)
from heimdall_lab.errors import (
    InactivityError,
    RedirectError,
    RefusedError,
    TimeLimitError,
    ValidationError,
)
from heimdall_lab.kiwi import guest, protocol
from heimdall_lab.kiwi.acquire import acquire, acquire_async
from heimdall_lab.kiwi.client import KiwiClient, StreamSettings, check_health, server_refusal
from heimdall_lab.kiwi.guest import ConnectionSlots, HostManners
from heimdall_lab.receivers import Receiver
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.versions import __version__

FREQ = 10e6
FAST_RETRY = RetryPolicy(initial_s=0.01, maximum_s=0.05, jitter_s=0.01)


def _receivers(n: int, prefix: str = "RX") -> list[Receiver]:
    return [
        Receiver(f"{prefix}{i:02d}", "127.0.0.1", 8073, 45.0 + 0.3 * i, 5.0 + 0.2 * i)
        for i in range(n)
    ]


def _emulator(receivers: list[Receiver], **kwargs) -> Emulator:
    scenario = Scenario.default(seed=5, sites=tuple(Site.from_receiver(r) for r in receivers))
    return Emulator(scenario, receivers=receivers, **kwargs)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(guest.IDENT_ENV, raising=False)
    monkeypatch.delenv(guest.MAX_CONNECTIONS_ENV, raising=False)


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A throwaway CA, and a certificate it signed for 127.0.0.1: (ca, cert, key)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)

    def name(text: str):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("heimdall test CA"))
        .issuer_name(name("heimdall test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


async def test_tls_receiver_is_reached_over_wss_and_https(tls_files):
    ca, cert, key = tls_files
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    trusted = ssl.create_default_context(cafile=str(ca))
    async with _emulator(_receivers(2), realtime=False, ssl_context=server) as emu:
        receivers = emu.receivers
        assert all(r.tls for r in receivers)
        assert KiwiClient(receivers[0], FREQ, 1.0).uri.startswith("wss://127.0.0.1:")
        acq = await acquire_async(receivers, FREQ, 1.0, ssl_context=trusted, retries=0)
        health = await check_health(receivers[0], ssl_context=trusted)
        # Not trusted by the system's store: a typed reason, not retried.
        untrusted = await acquire_async(
            receivers[:1], FREQ, 1.0, retries=3, retry_policy=FAST_RETRY
        )
        no_health = await check_health(receivers[0])
        handshakes = emu.units[receivers[0].name].connections
    assert acq.ok == [r.name for r in receivers]
    assert health.reachable and health.users_max == 4
    assert untrusted.outcomes[0].reason == "tls" and untrusted.outcomes[0].attempts == 1
    assert "ssl_context" in untrusted.outcomes[0].message
    assert not no_health.reachable and no_health.error
    assert handshakes == 1  # the untrusted attempts never reached the WebSocket upgrade


# --- the identity sent ----------------------------------------------------------------------


def _idents(unit) -> list[str]:
    return [
        protocol.decode_params(c[4:])["ident_user"]
        for _, c in unit.commands
        if c.startswith("SET ident_user=")
    ]


async def test_identity_default_environment_and_parameter(monkeypatch):
    async with _emulator(_receivers(1), realtime=False) as emu:
        r = emu.receivers[0]
        unit = emu.units[r.name]
        await acquire_async([r], FREQ, 0.2, retries=0)
        monkeypatch.setenv(guest.IDENT_ENV, "lab-42 (ops@example.org)")
        await acquire_async([r], FREQ, 0.2, retries=0)
        await acquire_async([r], FREQ, 0.2, retries=0, ident="tester/1")
        await acquire_async([r], FREQ, 0.2, retries=0, settings=StreamSettings(ident="mine"))
        monkeypatch.setenv(guest.IDENT_ENV, "bad\x1bname")
        with pytest.raises(ValidationError, match=guest.IDENT_ENV):
            await acquire_async([r], FREQ, 0.2, retries=0)
        with pytest.raises(ValidationError):
            await acquire_async([r], FREQ, 0.2, retries=0, ident="x" * 200)
        connections = unit.connections
    assert _idents(unit) == [
        f"heimdall_lab/{__version__}",
        "lab-42 (ops@example.org)",
        "tester/1",
        "mine",
    ]
    assert f"heimdall_lab/{__version__}" == guest.DEFAULT_IDENT
    assert connections == 4  # the bad identities were refused before connecting


# --- typed reasons, end to end --------------------------------------------------------------

#: Fault, expected status, reason, and a piece of the message.
REASONS = {
    "too_busy": (Fault("too_busy"), "failed", "too_busy", "slots are taken"),
    "down": (Fault("down"), "failed", "down", "down"),
    "updating": (Fault("updating"), "failed", "down", "badp=6"),
    "redirect": (Fault("redirect"), "failed", "redirect", repr(REDIRECT_TO)),
    "bad_password": (Fault("bad_password"), "failed", "bad_password", "badp=1"),
    "refused_ip": (Fault("refused_ip"), "failed", "refused", "badp=3"),
    "no_multiple": (Fault("no_multiple"), "failed", "refused", "badp=5"),
    "time_limit_at_login": (
        Fault("time_limit"),
        "failed",
        "time_limit",
        f"{TIME_LIMIT_MIN} minutes",
    ),
    "time_limit_mid_stream": (
        Fault("time_limit", after_frames=20),
        "incomplete",
        "time_limit",
        f"{TIME_LIMIT_MIN} minutes",
    ),
    "inactivity": (
        Fault("inactivity", after_frames=20),
        "incomplete",
        "inactivity",
        f"{INACTIVITY_MIN} minutes",
    ),
}
#: Reasons retried within a capture (after the backoff), while the host is not cooling.
RETRIED = {"too_busy", "down"}


async def test_each_refusal_is_typed_and_never_storms():
    """One capture, every way to refuse at once, plus two good receivers.

    The process's manners leave loopback receivers alone (each capture starts afresh), so
    ``too_busy`` and ``down`` are retried as often as asked; the others never.
    """
    names = list(REASONS)
    receivers = _receivers(len(names) + 2)
    faults = {r.name: REASONS[k][0] for r, k in zip(receivers, names, strict=False)}
    async with _emulator(receivers, realtime=False, faults=faults) as emu:
        acq = await acquire_async(emu.receivers, FREQ, 2.0, retries=2, retry_policy=FAST_RETRY)
        seen = {name: unit.connections for name, unit in emu.units.items()}
    table = acq.status()
    for r, key in zip(receivers, names, strict=False):
        _, status, reason, text = REASONS[key]
        row = table.loc[r.name]
        assert (row["status"], row["reason"]) == (status, reason), (key, row["message"])
        assert text in row["message"], (key, row["message"])
        expected = 3 if reason in RETRIED else 1
        assert seen[r.name] == expected == row["attempts"], key
        if status == "incomplete":
            assert row["samples"] >= 20 * 512
    for r in receivers[len(names) :]:
        assert table.loc[r.name, "status"] == "ok"
        assert seen[r.name] == 1
    redirect = acq.outcomes[names.index("redirect")]
    assert "not followed" in redirect.message


async def test_a_host_that_refuses_twice_cools_down_across_captures():
    clock = FakeClock()
    manners = HostManners(loopback=True, clock=clock, cooldown_s=600)
    good, busy, picky, limited = _receivers(4)
    faults = {
        busy.name: Fault("too_busy"),
        picky.name: Fault("no_multiple"),
        limited.name: Fault("time_limit"),
    }
    async with _emulator([good, busy, picky, limited], realtime=False, faults=faults) as emu:
        units = emu.units

        async def capture():
            acq = await acquire_async(
                emu.receivers, FREQ, 0.5, retries=5, retry_policy=FAST_RETRY, manners=manners
            )
            return acq.status(), {o.receiver.name: o for o in acq.outcomes}

        first, first_out = await capture()
        after_first = {n: u.connections for n, u in units.items()}
        second, second_out = await capture()
        after_second = {n: u.connections for n, u in units.items()}
        clock.t += 601  # the cool-downs are over
        units[busy.name].fault = None
        units[limited.name].fault = None
        third, _ = await capture()
        after_third = {n: u.connections for n, u in units.items()}
        # Refused again (its cool-down ended too): left alone again; forget() tries at once.
        fourth, _ = await capture()
        manners.forget()
        units[picky.name].fault = None
        fifth, _ = await capture()
    # too_busy twice in a row within the first capture: no third attempt, though 5 were allowed.
    assert first.loc[busy.name, "reason"] == "too_busy"
    assert after_first[busy.name] == 2 == first.loc[busy.name, "attempts"]
    assert "left alone for 600 s" in first.loc[busy.name, "message"]
    assert first_out[busy.name].retry_after_s == pytest.approx(600)
    # An operator's refusal once: not retried, not yet cooling; a time limit cools at once.
    assert first.loc[picky.name, "reason"] == "refused" and after_first[picky.name] == 1
    assert first_out[picky.name].retry_after_s == 0
    assert first.loc[limited.name, "reason"] == "time_limit" and after_first[limited.name] == 1
    assert first_out[limited.name].retry_after_s == pytest.approx(600)
    # The next capture does not connect to the hosts cooling down, and says for how long.
    for name in (busy.name, limited.name):
        row = second.loc[name]
        assert (row["status"], row["reason"], row["attempts"]) == ("failed", "cooling_down", 0)
        assert "another 600 s" in row["message"]
        assert after_second[name] == after_first[name]
        assert second_out[name].retry_after_s == pytest.approx(600)
    assert second.loc[picky.name, "reason"] == "refused"
    assert after_second[picky.name] == 2
    # Other receivers are unaffected throughout.
    for table in (first, second, third, fourth, fifth):
        assert table.loc[good.name, "status"] == "ok"
    # After the cool-down they are tried again (and serve).
    assert third.loc[busy.name, "status"] == "ok" and third.loc[limited.name, "status"] == "ok"
    assert after_third[busy.name] == after_second[busy.name] + 1
    assert third.loc[picky.name, "reason"] == "refused"
    assert "left alone for 600 s" in third.loc[picky.name, "message"]
    assert after_third[picky.name] == 3
    assert fourth.loc[picky.name, "reason"] == "cooling_down"
    assert fifth.loc[picky.name, "status"] == "ok"


async def test_receivers_at_one_host_share_its_backoff_and_cool_down():
    """Five receivers of one host all say too_busy: five connections in all, not thirty."""
    manners = HostManners(loopback=True, key=lambda r: r.host)
    slow = RetryPolicy(initial_s=2.0, maximum_s=2.0, jitter_s=0.0)
    receivers = _receivers(5)
    faults = {r.name: Fault("too_busy") for r in receivers}
    async with _emulator(receivers, realtime=False, faults=faults) as emu:
        acq = await acquire_async(
            emu.receivers, FREQ, 0.5, retries=5, retry_policy=slow, manners=manners
        )
        seen = sum(u.connections for u in emu.units.values())
    assert seen == 5
    assert set(acq.status()["reason"]) == {"too_busy"}
    assert manners.hosts()["127.0.0.1"].refusals == 5


async def test_the_process_manners_forget_nothing_of_other_hosts_but_leave_loopback_alone():
    receivers = _receivers(1)
    async with _emulator(receivers, realtime=False, faults={"RX00": Fault("too_busy")}) as emu:
        for _ in range(2):
            acq = await acquire_async(emu.receivers, FREQ, 0.5, retries=1, retry_policy=FAST_RETRY)
            assert acq.outcomes[0].reason == "too_busy" and acq.outcomes[0].attempts == 2
        assert emu.units["RX00"].connections == 4
    assert not [k for k in guest.MANNERS.hosts() if k.startswith("127.0.0.1")]


# --- connections at once --------------------------------------------------------------------


async def test_twenty_receivers_four_connections_at_once():
    receivers = _receivers(20)
    async with _emulator(receivers, realtime=True) as emu:
        acq = await acquire_async(emu.receivers, FREQ, 0.5, retries=0, max_connections=4)
        peak = emu.max_sessions
        per_receiver = [u.connections for u in emu.units.values()]
    assert acq.ok == [r.name for r in receivers]
    assert peak == 4
    assert per_receiver == [1] * 20  # exactly one connection each


async def test_the_process_limit_holds_across_captures_in_threads(monkeypatch):
    """Two blocking captures at once, on two event loops, share the process's 3 slots."""
    monkeypatch.setenv(guest.MAX_CONNECTIONS_ENV, "3")
    manners = HostManners(loopback=True)
    receivers = _receivers(8)
    async with _emulator(receivers, realtime=True) as emu:
        halves = emu.receivers[:4], emu.receivers[4:]

        def run(part):
            return acquire(part, FREQ, 0.5, retries=0, manners=manners)

        results = await asyncio.gather(*(asyncio.to_thread(run, part) for part in halves))
        peak = emu.max_sessions
    assert [len(a.ok) for a in results] == [4, 4]
    assert peak <= 3 and manners.slots.peak == 3
    assert manners.slots.in_use == 0 and manners.slots.waiting == 0


async def test_waiting_for_a_connection_counts_against_the_deadline():
    receivers = _receivers(3)
    async with _emulator(receivers, realtime=True) as emu:
        acq = await acquire_async(
            emu.receivers, FREQ, 1.0, retries=0, max_connections=1, deadline_s=1.8
        )
        connected = [u.connections for u in emu.units.values()]
    last = acq.outcomes[-1]
    assert (last.status, last.reason, last.attempts) == ("failed", "deadline", 0)
    assert "before a connection was free" in last.message
    assert connected[-1] == 0


def test_bad_limits_are_refused_before_connecting(monkeypatch):
    r = Receiver("RX", "127.0.0.1", 1)
    with pytest.raises(ValidationError, match="max_connections"):
        acquire([r], FREQ, 1.0, max_connections=0)
    monkeypatch.setenv(guest.MAX_CONNECTIONS_ENV, "many")
    with pytest.raises(ValidationError, match=guest.MAX_CONNECTIONS_ENV):
        acquire([r], FREQ, 1.0)


async def test_slots_are_shared_between_event_loops_and_survive_cancellation():
    slots = ConnectionSlots(2)
    lock = threading.Lock()
    now = {"in": 0, "peak": 0, "done": 0}

    async def one() -> None:
        async with slots.hold():
            with lock:
                now["in"] += 1
                now["peak"] = max(now["peak"], now["in"])
            await asyncio.sleep(0.02)
            with lock:
                now["in"] -= 1
                now["done"] += 1

    def loop_of_tasks() -> None:
        async def main():
            await asyncio.gather(*(one() for _ in range(6)))

        asyncio.run(main())

    threads = [threading.Thread(target=loop_of_tasks) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert now["done"] == 18 and now["peak"] == 2 == slots.peak
    # A cancelled wait takes no slot with it.
    await slots.acquire()
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert slots.waiting == 1
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    slots.release()
    slots.release()
    assert slots.in_use == 0 and slots.waiting == 0
    async with slots.hold(), slots.hold():
        assert slots.in_use == 2


# --- the memory of hosts, with a clock of its own -------------------------------------------


def test_host_records_backoff_and_cool_down():
    clock = FakeClock()
    manners = HostManners(clock=clock, rng=random.Random(1), cooldown_s=600)
    policy = RetryPolicy(initial_s=1.0, maximum_s=8.0, jitter_s=0.5)
    a = Receiver("A", "Kiwi.Example.org", 8073)
    b = Receiver("B", "kiwi.example.org", 8074)
    other = Receiver("C", "other.example.org", 8073)
    rec = manners.record(a)
    assert manners.record(b) is rec and manners.record(other) is not rec
    waits = []
    for _ in range(8):
        manners.failed(rec, policy)
        waits.append(manners.wait_left(manners.record(b)))
        clock.t += waits[-1]
    assert 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 2.5
    assert all(8.0 <= w <= 8.5 for w in waits[3:])  # bounded
    assert len(set(waits)) == len(waits)  # jittered
    assert manners.wait_left(manners.record(other)) == 0
    assert not manners.refused(rec, "too_busy", policy)
    assert manners.cooling_left(rec) == 0
    manners.failed(rec, policy, admitted=True)  # admitted, then stalled: the streak ends
    assert not manners.refused(rec, "down", policy)
    assert manners.refused(rec, "refused", policy)
    assert manners.cooling_left(manners.record(b)) == pytest.approx(600)
    clock.t += 599
    assert manners.cooling_left(rec) == pytest.approx(1)
    clock.t += 2
    assert manners.cooling_left(rec) == 0
    assert manners.refused(rec, "time_limit", policy)  # at once
    manners.served(rec)
    assert manners.cooling_left(rec) == 0 and manners.wait_left(rec) == 0
    assert manners.refused(rec, "redirect", policy) is False
    manners.forget("KIWI.example.org".lower())
    assert "kiwi.example.org" not in manners.hosts()


def test_loopback_is_per_port_and_not_remembered_unless_asked():
    e1 = Receiver("E1", "127.0.0.1", 9001)
    e2 = Receiver("E2", "127.0.0.1", 9002)
    mine = HostManners()
    assert not mine.remembers(e1) and mine.record(e1) is not mine.record(e1)
    anyone = HostManners(loopback=True)
    assert anyone.record(e1) is anyone.record(e1)
    assert anyone.record(e1) is not anyone.record(e2)
    assert guest.host_key(e1) == "127.0.0.1:9001"
    assert guest.is_loopback("localhost") and guest.is_loopback("::1")
    assert not guest.is_loopback("kiwi.example.org") and not guest.is_loopback("10.0.0.1")
    anyone.forget("127.0.0.1")
    assert anyone.hosts() == {}


# --- what a server says, shown safely -------------------------------------------------------


def test_server_refusals_are_typed_and_shown_safely():
    evil = "http://x.invalid/\x1b[2J\r\n" + "A" * 10_000
    redirect = server_refusal("RX", {"redirect": evil})
    assert isinstance(redirect, RedirectError) and "\x1b" not in str(redirect)
    assert len(str(redirect)) < 400 and redirect.target.startswith("'http://x.invalid/")
    limit = server_refusal("RX", {"ip_limit": "240,203.0.113.9"})
    assert isinstance(limit, TimeLimitError) and "240 minutes" in str(limit)
    assert "203.0.113.9" not in str(limit)  # this client's own address stays out of logs
    assert isinstance(server_refusal("RX", {"inactivity_timeout": "30"}), InactivityError)
    refused = server_refusal("RX", {"badp": "5"})
    assert isinstance(refused, RefusedError) and refused.code == "5"
    assert "same IP address" in str(refused)
    assert server_refusal("RX", {"badp": "0", "audio_rate": "12000"}) is None
    assert server_refusal("RX", {"badp": "9" * 999}).reason == "refused"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("redirect_huge", "redirect"),
        ("badp_garbage", "refused"),
        ("ip_limit_garbage", "time_limit"),
        ("inactivity_garbage", "inactivity"),
    ],
)
async def test_hostile_refusals_stay_one_short_printable_line(mode, reason):
    with HostileServer(mode) as bad:
        acq = await acquire_async([bad.receiver], FREQ, 0.5, retries=0)
    out = acq.outcomes[0]
    assert out.reason == reason and out.status == "failed"
    assert len(out.message) < 400 and out.message.isprintable()
    assert "10.9.8.7" not in out.message
