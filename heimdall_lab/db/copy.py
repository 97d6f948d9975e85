"""PostgreSQL's binary COPY format, encoded column-wise with numpy."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence

import numpy as np

from heimdall_lab.db.columns import _MEASUREMENT_TYPES, _Columns

log = logging.getLogger(__name__)


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds


# ----------------------------------------------------------------------------- binary COPY

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_FLOAT4_OID = 700


def _fixed(values: np.ndarray, null: np.ndarray, be_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    width = np.dtype(be_dtype).itemsize
    lens = np.where(null, -1, width).astype(np.int64)
    payload = np.ascontiguousarray(values[~null].astype(be_dtype)).view(np.uint8)
    return lens, payload


def _varlen(items: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((-1 if b is None else len(b) for b in items), np.int64, len(items))
    payload = np.frombuffer(b"".join(b for b in items if b is not None), np.uint8)
    return lens, payload


def _psd_binary(psd: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    present = [p for p in psd if p is not None]
    lengths = {len(p) for p in present}
    n = len(psd)
    if len(lengths) == 1 and 0 not in lengths:
        (length,) = lengths
        m = len(present)
        body = np.empty((m, length, 2), dtype=">i4")
        body[:, :, 0] = 4
        body[:, :, 1] = np.stack(present).astype(">f4").view(">i4")
        head = np.array([1, 0, _FLOAT4_OID, length, 1], dtype=">i4")
        block = np.empty((m, 20 + 8 * length), np.uint8)
        block[:, :20] = head.view(np.uint8)
        block[:, 20:] = body.reshape(m, -1).view(np.uint8)
        lens = np.full(n, -1, np.int64)
        lens[[i for i, p in enumerate(psd) if p is not None]] = 20 + 8 * length
        return lens, block.reshape(-1)
    items: list[bytes | None] = []
    for p in psd:
        if p is None:
            items.append(None)
        elif len(p) == 0:
            items.append(np.array([0, 0, _FLOAT4_OID], dtype=">i4").tobytes())
        else:
            body = np.empty((len(p), 2), dtype=">i4")
            body[:, 0] = 4
            body[:, 1] = p.astype(">f4").view(">i4")
            head = np.array([1, 0, _FLOAT4_OID, len(p), 1], dtype=">i4")
            items.append(head.tobytes() + body.tobytes())
    return _varlen(items)


def _encode_rows(cols: _Columns, capture_id: str, start: int, stop: int) -> bytes:
    """Rows ``start:stop`` as binary COPY tuples (no header or trailer), in COPY column order.

    Each column is encoded as an array of field lengths (-1 for NULL) and the concatenated
    big-endian payloads of its non-NULL values; the tuples are then assembled by scattering
    every column into place, all with numpy, so the cost is a few passes over the bytes.
    """
    sl = slice(start, stop)
    n = stop - start
    no_null = np.zeros(n, bool)
    cid = capture_id.encode()
    fields: list[tuple[np.ndarray, np.ndarray]] = []
    for col, kind in _MEASUREMENT_TYPES:
        if col == "capture_id":
            fields.append((np.full(n, len(cid), np.int64), np.frombuffer(cid * n, np.uint8)))
        elif col == "websdr_id":
            fields.append(_fixed(cols.websdr_id[sl], no_null, ">i4"))
        elif col == "timestamp_utc":
            fields.append(_fixed(cols.timestamp_us[sl] - _PG_EPOCH_US, no_null, ">i8"))
        elif kind == "float8":
            v = cols.floats[col][sl]
            fields.append(_fixed(v, np.isnan(v), ">f8"))
        elif col == "samples_count":
            fields.append(_fixed(cols.samples_count[0][sl], cols.samples_count[1][sl], ">i8"))
        elif col == "signal_present":
            v, null = cols.signal_present
            fields.append(_fixed(v[sl].astype(np.uint8), null[sl], "u1"))
        elif col == "psd":
            fields.append(_psd_binary(cols.psd[sl]))
        elif col == "iq_path":
            fields.append(_varlen([None if s is None else s.encode() for s in cols.iq_path[sl]]))
        elif col == "metadata":
            fields.append(
                _varlen([None if s is None else b"\x01" + s.encode() for s in cols.metadata[sl]])
            )
        else:  # pragma: no cover - every column has an encoder
            raise AssertionError(col)
    lens = np.stack([f[0] for f in fields])  # (ncols, n)
    sizes = 4 + np.maximum(lens, 0)
    row_size = 2 + sizes.sum(axis=0)
    row_start = np.concatenate([[0], np.cumsum(row_size)[:-1]])
    buf = np.empty(int(row_size.sum()), np.uint8)
    nfields = np.array([len(fields)], ">i2").view(np.uint8)
    buf[row_start[:, None] + np.arange(2)] = nfields
    pos = row_start + 2
    for (flen, payload), size in zip(fields, sizes, strict=True):
        buf[pos[:, None] + np.arange(4)] = flen.astype(">i4").view(np.uint8).reshape(-1, 4)
        present = flen >= 0
        if payload.size:
            starts = pos[present] + 4
            plen = flen[present]
            src_start = np.concatenate([[0], np.cumsum(plen)[:-1]])
            buf[np.repeat(starts - src_start, plen) + np.arange(payload.size)] = payload
        pos = pos + size
    return buf.tobytes()


class _CopyStream(io.RawIOBase):
    """A file psycopg2 reads a binary COPY from, encoding ``chunk`` rows at a time."""

    def __init__(self, cols: _Columns, capture_id: str, start: int, stop: int, chunk: int):
        super().__init__()
        self._parts = self._generate(cols, capture_id, start, stop, chunk)
        self._pending = b""

    @staticmethod
    def _generate(
        cols: _Columns, capture_id: str, start: int, stop: int, chunk: int
    ) -> Iterator[bytes]:
        yield _COPY_HEADER
        for lo in range(start, stop, chunk):
            yield _encode_rows(cols, capture_id, lo, min(stop, lo + chunk))
        yield _COPY_TRAILER

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._pending) < size:
            part = next(self._parts, None)
            if part is None:
                break
            self._pending += part
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out
