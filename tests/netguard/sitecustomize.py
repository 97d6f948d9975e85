"""The loopback guard: tests, and every Python process they start, may reach only this machine.

Installed in the test process by ``conftest.py`` and, through ``PYTHONPATH`` pointing at this
folder, in every Python subprocess (the CLI, notebook kernels, Dask workers) as
``sitecustomize``. Name lookups of anything but ``localhost`` and connections or datagrams to
any address outside 127.0.0.0/8 and ::1 raise :class:`OffLimitsError` and are written to the
file named by ``HEIMDALL_NETGUARD_LOG``; the test session fails any test after which that
file is not empty, so even an attempt that the code under test catches is seen.
"""

from __future__ import annotations

import ipaddress
import os
import socket

LOG_ENV = "HEIMDALL_NETGUARD_LOG"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_OWN_NAME = socket.gethostname()


class OffLimitsError(ConnectionRefusedError):
    """An attempt to reach a host outside loopback."""


def _loopback(host: object) -> bool:
    if host is None:
        return True
    if host == _OWN_NAME:  # this machine's own name (libraries look it up)
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    if host.lower() in _LOCAL_NAMES or host == "":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse(what: str, host: object) -> None:
    message = f"off limits: {what} {host!r} is outside loopback (127.0.0.0/8, ::1)"
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"pid {os.getpid()}: {message}\n")
    raise OffLimitsError(message)


def _inet(sock: socket.socket) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6)


def _check_address(sock: socket.socket, address: object) -> None:
    if _inet(sock) and isinstance(address, tuple) and not _loopback(address[0]):
        _refuse("connection to", address[0])


def _datagram(sock: socket.socket) -> bool:
    return _inet(sock) and sock.type == socket.SOCK_DGRAM


def install() -> None:
    """Guard this process (idempotent)."""
    if getattr(socket, "_heimdall_netguard", False):
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_send = socket.socket.send
    real_sendall = socket.socket.sendall
    real_sendmsg = socket.socket.sendmsg
    real_gethostbyname = socket.gethostbyname
    real_gethostbyname_ex = socket.gethostbyname_ex
    real_getaddrinfo = socket.getaddrinfo

    # Connecting a datagram socket sends nothing (libraries do it to learn their own
    # address); what it would send is checked in send() instead.
    def connect(self, address):
        if not _datagram(self):
            _check_address(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _datagram(self):
            _check_address(self, address)
        return real_connect_ex(self, address)

    def send(self, data, *args):
        if _datagram(self):
            _check_address(self, self.getpeername())
        return real_send(self, data, *args)

    def sendall(self, data, *args):
        if _datagram(self):
            _check_address(self, self.getpeername())
        return real_sendall(self, data, *args)

    def sendmsg(self, buffers, *args):
        if _datagram(self):
            _check_address(self, args[2] if len(args) > 2 else self.getpeername())
        return real_sendmsg(self, buffers, *args)

    def gethostbyname(host):
        if not _loopback(host):
            _refuse("name lookup of", host)
        return real_gethostbyname(host)

    def gethostbyname_ex(host):
        if not _loopback(host):
            _refuse("name lookup of", host)
        return real_gethostbyname_ex(host)

    def sendto(self, data, *args):
        _check_address(self, args[-1])
        return real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host):
            _refuse("name lookup of", host)
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.socket.send = send
    socket.socket.sendall = sendall
    socket.socket.sendmsg = sendmsg
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    socket.getaddrinfo = getaddrinfo
    socket._heimdall_netguard = True


if os.environ.get(LOG_ENV):
    install()
