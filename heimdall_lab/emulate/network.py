"""An emulated receiver network: many receivers at real positions, and their public directory.

The real network is described by the public directory (:mod:`heimdall_lab.directory`). The
emulator can stand in for a part of it, so the whole loop runs offline on loopback: import
the directory from :class:`DirectoryServer`'s URL, select receivers around an emulated
transmitter, capture from them, locate it::

    from heimdall_lab import directory
    from heimdall_lab.emulate import Scenario, emulated
    from heimdall_lab.emulate.network import DirectoryServer, network_receivers

    real = directory.load("kiwisdr_com-2025-12-31.js")
    receivers = network_receivers(real, count=100, near=(50.0, 9.0))
    scenario = Scenario.default(seed=1, receivers=receivers, transmitter=...)
    with emulated(scenario=scenario, receivers=receivers) as emu:
        with DirectoryServer(emu.emulator) as served:
            listed = directory.load(served.url("js"))   # loopback addresses
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from heimdall_lab import directory, geo
from heimdall_lab.emulate.server import Emulator
from heimdall_lab.errors import ValidationError
from heimdall_lab.kiwi.protocol import status_fields
from heimdall_lab.receivers import Receiver

#: Paths the directory server answers, by form.
PATHS = {"js": "/kiwisdr_com.js", "html": "/public/"}


def network_receivers(
    source: directory.Directory | Sequence[directory.Entry],
    count: int = 100,
    *,
    near: tuple[float, float] = (50.0, 9.0),
    host: str = "127.0.0.1",
) -> list[Receiver]:
    """Receivers to emulate, at the real positions of directory entries.

    The ``count`` receivers with fresh GNSS nearest to ``near``, one per place (within
    1 km), named and placed as the directory has them; their address is a placeholder on
    ``host`` until the emulator starts them.

    Parameters
    ----------
    source : Directory or sequence of Entry
        The real directory (e.g. the snapshot).
    count : int, default 100
        How many.
    near : tuple of float, default (50.0, 9.0)
        Latitude and longitude the chosen receivers are nearest to.
    host : str, default "127.0.0.1"
        The address they are given.

    Returns
    -------
    list of Receiver
        Nearest first.

    Raises
    ------
    ValidationError
        If ``count`` is not a positive whole number or the directory has fewer receivers
        with fresh GNSS.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValidationError(f"count must be a whole number >= 1, got {count!r}")
    geo.check_position(*near, "near")
    entries = [e for e in source if e.fresh_gnss]
    entries.sort(key=lambda e: (geo.distance_m(*near, e.latitude, e.longitude), e.name))
    chosen: list[directory.Entry] = []
    for e in entries:
        if all(
            geo.distance_m(e.latitude, e.longitude, c.latitude, c.longitude) > 1e3 for c in chosen
        ):
            chosen.append(e)
        if len(chosen) == count:
            break
    if len(chosen) < count:
        raise ValidationError(
            f"the directory has {len(chosen)} receivers with fresh GNSS at distinct places; "
            f"{count} were asked for"
        )
    return [
        Receiver(
            e.name,
            host,
            8073,
            e.latitude,
            e.longitude,
            e.location_name,
            e.min_frequency_hz,
            e.max_frequency_hz,
        )
        for e in chosen
    ]


def directory_records(emulator: Emulator) -> list[dict[str, str]]:
    """The directory's records of the emulator's receivers, as they are now.

    Each record holds what the receiver's own ``/status`` page says (users now, GNSS state)
    plus what the directory adds: its URL on loopback, an id, when it was updated, and the
    ``GPS`` flag of ``sdr_hw``.

    Parameters
    ----------
    emulator : Emulator
        A started emulator.

    Returns
    -------
    list of dict of str to str
        One record per receiver, for :func:`heimdall_lab.directory.render_js` or
        :func:`~heimdall_lab.directory.render_html`.
    """
    now = formatdate(time.time(), usegmt=True)
    records = []
    for unit in emulator.units.values():
        r = unit.receiver
        fields = status_fields(emulator.status_page(unit))
        gps = int(fields.get("gps_good", "0") or 0) > 0
        fields.update(
            name=f"{r.name} | {r.location_name or 'emulated receiver'} | heimdall_lab emulator",
            tdoa_id=r.name if len(r.name) <= 16 else "",
            sdr_hw="KiwiSDR emulated" + (" \u2063 \U0001f4e1 GPS" if gps else ""),
            url=f"http://{r.host}:{r.port}",
            id=hashlib.sha256(r.name.encode()).hexdigest()[:12],
            updated=now,
            antenna="emulated",
            snr="30,30",
        )
        records.append(fields)
    return records


class DirectoryServer:
    """Serve the emulator's directory over HTTP on loopback, in both published forms.

    ``GET /kiwisdr_com.js`` gives the JavaScript array form and ``GET /public/`` the HTML
    form of :func:`directory_records`, built at each request (so users and GNSS are live).

    Parameters
    ----------
    emulator : Emulator
        A started emulator.
    host : str, default "127.0.0.1"
        Address to bind.
    port : int, default 0
        Port; 0 picks a free one.
    """

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                path = self.path.split("?", 1)[0]
                records = directory_records(owner.emulator)
                if path == PATHS["js"]:
                    body, kind = directory.render_js(records), "application/javascript"
                elif path in (PATHS["html"], "/public"):
                    body, kind = directory.render_html(records), "text/html"
                else:
                    self.send_error(HTTPStatus.NOT_FOUND, "only /kiwisdr_com.js and /public/")
                    return
                data = body.encode("utf-8")
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Host and port it listens on."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def url(self, form: str = "js") -> str:
        """The directory's URL in one form.

        Parameters
        ----------
        form : {"js", "html"}
            The JavaScript array or the HTML page.

        Returns
        -------
        str
            ``http://127.0.0.1:PORT/kiwisdr_com.js`` or ``.../public/``.
        """
        if form not in PATHS:
            raise ValidationError(f"form must be one of {sorted(PATHS)}, got {form!r}")
        host, port = self.address
        return f"http://{host}:{port}{PATHS[form]}"

    def start(self) -> DirectoryServer:
        """Start serving in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="heimdall-directory", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> DirectoryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
