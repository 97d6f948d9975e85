"""The IQ store: captures kept as zarr v3, findable by id, readable lazily; SigMF in and out.

A capture Dataset (see :mod:`heimdall_lab.dataset`) is written to
``<iq_url>/captures/<capture_id>.zarr``, where ``iq_url`` is a local folder
(``$HEIMDALL_IQ_URL``, else ``<cwd>/.heimdall/iq``) or any fsspec URL, ``s3://bucket/prefix``
on AWS S3 or MinIO included. The same code serves both: the filesystem comes from fsspec, the
zarr layout from xarray.

Layout of one capture
    ``iq`` is stored as zarr v3 with one receiver per chunk and chunks of at least 1 MiB along
    ``sample`` (blosc lz4 with byte shuffle, lossless: NaN padding and every bit survive);
    when a receiver has more than one chunk its chunks are packed into one shard object (up to
    64 chunks, 11 minutes at 12 kS/s, per shard). The other variables are one chunk each.
    Metadata is consolidated into the root ``zarr.json``.

Write order and the completion marker
    The capture is encoded in memory, then uploaded: chunk and shard objects first, then each
    array's ``zarr.json``, then the root ``zarr.json`` (the consolidated metadata), and last a
    small ``heimdall-complete.json`` object. Only a capture with that marker is listed, exists
    or opens. Writing a capture id again first removes the marker, then the old objects.
    Connection errors are retried with exponential backoff (tenacity); a full disk or quota, a
    denied permission, or a store still unreachable after the retries raise
    :class:`~heimdall_lab.errors.StorageError` naming the store URL.

Environment (read at :class:`IQStore` creation)
    ``HEIMDALL_IQ_URL``
        Default store URL.
    ``HEIMDALL_S3_ENDPOINT_URL``
        S3 endpoint, e.g. ``http://127.0.0.1:9000`` for MinIO (``AWS_ENDPOINT_URL_S3`` and
        ``AWS_ENDPOINT_URL`` are honoured too); AWS when unset.
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``, ``AWS_PROFILE``)
        Credentials, read by botocore's own chain: this module never reads, stores or logs
        them.
    ``AWS_REGION`` or ``AWS_DEFAULT_REGION``
        Region.
    ``HEIMDALL_S3_ADDRESSING_STYLE``
        ``path`` (default, what MinIO needs) or ``virtual``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import dask.array as da
import fsspec
import numpy as np
import pandas as pd
import sigmf
import xarray as xr
import zarr
from sigmf import SigMFCollection, SigMFFile
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from zarr.codecs import BloscCodec

from heimdall_lab import __version__
from heimdall_lab.dataset import build_dataset
from heimdall_lab.errors import FileFormatError, HeimdallError, StorageError, ValidationError
from heimdall_lab.receivers import Receiver
from heimdall_lab.recording import Recording
from heimdall_lab.wavfile import read_kiwi_wav

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable with the default store URL.
ENV_IQ_URL = "HEIMDALL_IQ_URL"
#: Environment variable with the S3 endpoint (MinIO or any S3); AWS when unset.
ENV_S3_ENDPOINT = "HEIMDALL_S3_ENDPOINT_URL"
#: Environment variable choosing S3 addressing: ``path`` (default) or ``virtual``.
ENV_S3_ADDRESSING = "HEIMDALL_S3_ADDRESSING_STYLE"
#: Folder of the captures under the store URL.
CAPTURES = "captures"
#: Name of the completion marker object inside a capture's zarr folder.
MARKER = "heimdall-complete.json"
#: Smallest IQ chunk along ``sample``, in bytes.
MIN_CHUNK_BYTES = 1 << 20
#: Most IQ chunks packed into one shard object.
MAX_SHARD_CHUNKS = 64
#: Version of the store layout, recorded in the completion marker.
STORE_FORMAT = 1
#: SigMF extension namespace used for what core SigMF has no field for.
SIGMF_NAMESPACE = "heimdall"

_FRAME = 512
_NS = 1_000_000_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KIWI_FILE = re.compile(r"^(?P<time>\d{8}T\d{6}Z)_(?P<freq>\d+)_(?P<name>.+)_iq$")
_S3_PROTOCOLS = ("s3", "s3a")
_FULL_CODES = {
    "XMinioStorageFull",
    "XMinioAdminBucketQuotaExceeded",
    "QuotaExceeded",
    "StorageFull",
}
_DENIED_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccountProblem",
    "InvalidToken",
    "ExpiredToken",
}
_BATCH_BYTES = 256 << 20
_BATCH_COUNT = 64
_NAN_IQ = np.complex64(complex(np.nan, np.nan))
_EXTENSION = {"name": SIGMF_NAMESPACE, "version": "1.0.0", "optional": True}

ProgressCallback = Callable[[int, int], None]


def default_iq_url() -> str:
    """The store URL used when none is given.

    Returns
    -------
    str
        ``$HEIMDALL_IQ_URL`` if set, else the absolute path of ``.heimdall/iq`` in the current
        working directory.
    """
    env = os.environ.get(ENV_IQ_URL, "").strip()
    return env or str(Path.cwd() / ".heimdall" / "iq")


def check_capture_id(capture_id: object) -> str:
    """Check that a capture id is safe as one object-key component.

    Parameters
    ----------
    capture_id : str
        1-128 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit, with
        no ``..``.

    Returns
    -------
    str
        The id.

    Raises
    ------
    ValidationError
        If it is not (it could escape the capture prefix, e.g. ``../x`` or ``a/b``).
    """
    if not isinstance(capture_id, str) or not _ID.match(capture_id) or ".." in capture_id:
        raise ValidationError(
            f"capture id {capture_id!r} must be 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit and without '..'"
        )
    return capture_id


def check_receiver_name(name: object) -> str:
    """Check that a receiver name is safe in object keys and file names.

    Parameters
    ----------
    name : str
        1-64 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit, with no
        ``..`` (the rule of :class:`~heimdall_lab.receivers.Receiver`).

    Returns
    -------
    str
        The name.

    Raises
    ------
    ValidationError
        If it is not.
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValidationError(
            f"receiver name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit and without '..'"
        )
    return name


def redact_url(url: str) -> str:
    """A URL without any ``user:password@`` part, fit for messages and logs.

    Parameters
    ----------
    url : str
        Any URL or path.

    Returns
    -------
    str
        The URL with its credentials removed.
    """
    return re.sub(r"(://)[^/@]*@", r"\1", url)


def s3_storage_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """s3fs options for S3 or MinIO from the environment.

    Parameters
    ----------
    environ : mapping, optional
        Environment to read (``os.environ`` by default).

    Returns
    -------
    dict
        ``client_kwargs`` (``endpoint_url`` from ``HEIMDALL_S3_ENDPOINT_URL``,
        ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``; ``region_name`` from ``AWS_REGION`` or
        ``AWS_DEFAULT_REGION``) and ``config_kwargs`` (path-style addressing unless
        ``HEIMDALL_S3_ADDRESSING_STYLE=virtual``; checksums only when required, as MinIO and
        older S3-compatible servers need; connect and read timeouts). Credentials are left to
        botocore, which reads ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` itself.
    """
    env = os.environ if environ is None else environ
    client: dict[str, Any] = {}
    endpoint = next(
        (
            env[k].strip()
            for k in (ENV_S3_ENDPOINT, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
            if env.get(k, "").strip()
        ),
        None,
    )
    if endpoint:
        client["endpoint_url"] = endpoint
    region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip()
    if region:
        client["region_name"] = region
    style = (env.get(ENV_S3_ADDRESSING) or "path").strip().lower()
    if style not in ("path", "virtual", "auto"):
        raise ValidationError(f"{ENV_S3_ADDRESSING} must be path, virtual or auto, not {style!r}")
    config = {
        "s3": {"addressing_style": style},
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    return {"client_kwargs": client, "config_kwargs": config}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class RetryPolicy:
    """How store operations are retried on connection errors.

    Attributes
    ----------
    attempts : int
        Tries in all, the first included.
    initial_s, maximum_s : float
        First wait and cap of the exponential backoff, in seconds.
    jitter_s : float
        Random extra wait, 0 to this many seconds.
    """

    attempts: int = 5
    initial_s: float = 0.5
    maximum_s: float = 10.0
    jitter_s: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValidationError("retry attempts must be >= 1")
        if min(self.initial_s, self.maximum_s, self.jitter_s) < 0:
            raise ValidationError("retry waits must be >= 0")


@dataclass(frozen=True)
class WriteResult:
    """What :meth:`IQStore.write` stored.

    Attributes
    ----------
    url : str
        URL of the capture's zarr folder (no credentials).
    capture_id : str
        Capture id.
    receivers : tuple of str
        Receivers stored.
    skipped : dict
        Receivers left out, name to reason.
    nbytes : int
        Bytes of all objects written (compressed IQ, metadata and marker).
    objects : int
        Objects written, the marker included.
    retries : int
        Operations retried after a connection error.
    elapsed_s : float
        Wall time of the write.
    """

    url: str
    capture_id: str
    receivers: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    nbytes: int = 0
    objects: int = 0
    retries: int = 0
    elapsed_s: float = 0.0


def iq_chunking(n_samples: int, itemsize: int = 8) -> tuple[int, int | None]:
    """Chunk and shard length along ``sample`` for one receiver's IQ row.

    Chunks hold at least :data:`MIN_CHUNK_BYTES` (the whole row when it is shorter), a
    multiple of the 512-sample frame, sized so the last chunk is nearly full. Rows of more
    than one chunk are packed into shards of up to :data:`MAX_SHARD_CHUNKS` chunks.

    Parameters
    ----------
    n_samples : int
        Length of the ``sample`` dimension.
    itemsize : int
        Bytes per sample (8 for complex64).

    Returns
    -------
    tuple of (int, int or None)
        Chunk length and shard length (``None``: no sharding, one object per chunk).
    """
    n_samples = max(int(n_samples), 1)
    least = MIN_CHUNK_BYTES // itemsize
    if n_samples <= least:
        return n_samples, None
    n_chunks = n_samples // least
    chunk = -(-math.ceil(n_samples / n_chunks) // _FRAME) * _FRAME
    n_chunks = math.ceil(n_samples / chunk)
    if n_chunks == 1:
        return chunk, None
    return chunk, chunk * min(n_chunks, MAX_SHARD_CHUNKS)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _s3_code(exc: BaseException) -> str | None:
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
    return None


def _connection_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError, asyncio.TimeoutError]
    try:
        from botocore import exceptions as boto
    except ImportError:  # pragma: no cover - s3fs brings botocore
        pass
    else:
        types += [boto.ConnectionError, boto.HTTPClientError]
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - s3fs brings aiohttp
        pass
    else:
        types += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    return tuple(types)


_CONNECTION_TYPES = _connection_types()


def is_connection_error(exc: BaseException) -> bool:
    """Whether an error means the store could not be reached (worth retrying).

    Parameters
    ----------
    exc : BaseException
        The error, with its causes.

    Returns
    -------
    bool
        True for refused, reset or timed-out connections (botocore's and aiohttp's included).
    """
    return any(isinstance(e, _CONNECTION_TYPES) for e in _chain(exc))


def _errno(exc: BaseException) -> int | None:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno is not None:
            return e.errno
    return None


def _is_store_error(exc: BaseException) -> bool:
    if isinstance(exc, HeimdallError):
        return False
    if isinstance(exc, OSError) or is_connection_error(exc):
        return True
    return any(type(e).__module__.startswith(("botocore", "aiobotocore")) for e in _chain(exc))


def _storage_error(action: str, url: str, exc: BaseException, attempts: int) -> StorageError:
    """Map a filesystem or S3 error to a :class:`StorageError` that says what to do."""
    url = redact_url(url)
    code = _s3_code(exc)
    eno = _errno(exc)
    detail = f"{type(exc).__name__}: {exc}"
    if eno in (errno.ENOSPC, errno.EDQUOT) or code in _FULL_CODES:
        msg = (
            f"could not {action} {url}: the store is full (no space left on the device or "
            f"quota exceeded; {detail}). Free space, raise the quota, or point {ENV_IQ_URL} "
            "at another store"
        )
    elif (
        isinstance(exc, PermissionError)
        or eno in (errno.EACCES, errno.EPERM, errno.EROFS)
        or code in _DENIED_CODES
    ):
        msg = (
            f"could not {action} {url}: permission denied ({detail}). Check the credentials "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the bucket policy, or that the "
            "folder is writable"
        )
    elif is_connection_error(exc):
        msg = (
            f"could not {action} {url}: the store did not answer after {attempts} attempt(s) "
            f"({detail}). Check that the server is up and that {ENV_S3_ENDPOINT} points at it"
        )
    elif isinstance(exc, FileNotFoundError) or code in ("NoSuchBucket", "NoSuchKey"):
        msg = (
            f"could not {action} {url}: not found ({detail}). Create the bucket or folder "
            "first, or check the store URL"
        )
    else:
        msg = f"could not {action} {url}: {detail}"
    return StorageError(msg, url=url)


def _to_ns(value: object, label: str) -> np.datetime64:
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{label} {value!r} is not a time") from exc
    if ts is pd.NaT:
        raise ValidationError(f"{label} must be a time, not NaT")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.value, "ns")


def _iso(t: np.datetime64) -> str:
    return f"{np.datetime_as_string(np.datetime64(t, 'ns'), unit='ns')}Z"


def _parse_iso(text: str) -> np.datetime64:
    return np.datetime64(text.strip().rstrip("Zz"), "ns")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def receiver_problem(ds: xr.Dataset, index: int) -> str | None:
    """Why one receiver of a capture Dataset cannot be stored, if it cannot.

    Parameters
    ----------
    ds : xarray.Dataset
        Capture Dataset.
    index : int
        Position of the receiver along ``receiver``.

    Returns
    -------
    str or None
        The reason (wrong dtype, ``n_samples`` out of range, no or non-finite samples within
        ``n_samples``, bad sample rate), or ``None`` when the receiver is fine.
    """
    iq = ds["iq"]
    if iq.dtype != np.complex64:
        return f"iq dtype is {iq.dtype}, expected complex64"
    width = iq.sizes["sample"]
    n = int(ds["n_samples"].values[index]) if "n_samples" in ds.coords else width
    if not 0 < n <= width:
        return f"n_samples {n} is outside 1..{width} (the sample dimension)"
    if "sample_rate" in ds.coords:
        rate = float(ds["sample_rate"].values[index])
        if not (math.isfinite(rate) and rate > 0):
            return f"sample rate {rate} is not a positive number"
    row = np.asarray(iq.isel(receiver=index).values[:n])
    finite = np.isfinite(row)
    bad = int(n - np.count_nonzero(finite))
    if bad == n:
        return f"all {n} samples within n_samples are NaN or infinite"
    if bad:
        return f"{bad} of {n} samples within n_samples are NaN or infinite"
    return None


class IQStore:
    """Captures as zarr v3 in a local folder or an S3 bucket.

    Parameters
    ----------
    url : str, optional
        Store URL: a local folder (path or ``file://``) or an fsspec URL such as
        ``s3://bucket/prefix``; :func:`default_iq_url` when omitted.
    storage_options : dict, optional
        fsspec options, merged over the environment's defaults for S3 (see
        :func:`s3_storage_options`). Keys or secrets passed here are used, never logged.
    retry : RetryPolicy, optional
        Retries of connection errors.

    Raises
    ------
    ValidationError
        If the URL is empty.
    """

    def __init__(
        self,
        url: str | None = None,
        storage_options: dict[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        url = (url if url is not None else default_iq_url()).strip()
        if not url:
            raise ValidationError("the store URL is empty")
        if url.startswith("file://"):
            url = url[len("file://") :]
        self.retry = retry or RetryPolicy()
        self.local = "://" not in url
        if self.local:
            self.url = os.path.abspath(os.path.expanduser(url))
            self._options: dict[str, Any] = {}
            self.fs: fsspec.AbstractFileSystem = fsspec.filesystem("file", auto_mkdir=True)
            self._root = self.url
        else:
            self.url = url.rstrip("/")
            protocol = self.url.split("://", 1)[0].lower()
            base = s3_storage_options() if protocol in _S3_PROTOCOLS else {}
            self._options = _merge(base, storage_options or {})
            self.fs, self._root = fsspec.url_to_fs(self.url, **self._options)
            self._root = self._root.rstrip("/")
        self.retries = 0

    def __repr__(self) -> str:
        return f"IQStore({redact_url(self.url)!r})"

    # -- paths -----------------------------------------------------------------------------

    def url_for(self, capture_id: str) -> str:
        """URL of a capture's zarr folder.

        Parameters
        ----------
        capture_id : str
            Capture id.

        Returns
        -------
        str
            ``<store url>/captures/<capture_id>.zarr``.

        Raises
        ------
        ValidationError
            If the id is not safe (see :func:`check_capture_id`).
        """
        return f"{self.url}/{CAPTURES}/{check_capture_id(capture_id)}.zarr"

    def _prefix(self, capture_id: str) -> str:
        return f"{self._root}/{CAPTURES}/{check_capture_id(capture_id)}.zarr"

    # -- retries and errors ----------------------------------------------------------------

    def _call(
        self,
        action: str,
        fn: Callable[..., T],
        *args: Any,
        passthrough: tuple[type[BaseException], ...] = (),
        **kwargs: Any,
    ) -> T:
        """Run one store operation, retrying connection errors, mapping the others."""
        policy = self.retry
        url = redact_url(self.url)
        tries = 0

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "IQ store %s: %s failed (%s: %s); attempt %d of %d, retrying in %.2f s",
                url,
                action,
                type(exc).__name__,
                exc,
                state.attempt_number,
                policy.attempts,
                wait,
            )

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential(multiplier=policy.initial_s, max=policy.maximum_s)
            + wait_random(0, policy.jitter_s),
            retry=retry_if_exception(is_connection_error),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    tries = attempt.retry_state.attempt_number
                    return fn(*args, **kwargs)
        except passthrough:
            raise
        except Exception as exc:
            if not _is_store_error(exc):
                raise
            raise _storage_error(action, self.url, exc, tries) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _rm(self, path: str, recursive: bool = False) -> bool:
        try:
            self._call(
                "delete from",
                self.fs.rm,
                path,
                recursive=recursive,
                passthrough=(FileNotFoundError,),
            )
        except FileNotFoundError:
            return False
        return True

    # -- queries ---------------------------------------------------------------------------

    def _marker(self, capture_id: str) -> dict[str, Any] | None:
        path = f"{self._prefix(capture_id)}/{MARKER}"
        try:
            raw = self._call("read", self.fs.cat_file, path, passthrough=(FileNotFoundError,))
        except FileNotFoundError:
            return None
        return _parse_marker(raw, capture_id)

    def exists(self, capture_id: str) -> bool:
        """Whether a complete copy of the capture is stored.

        Parameters
        ----------
        capture_id : str
            Capture id.

        Returns
        -------
        bool
            True only when the completion marker is there (a half-written capture is not).

        Raises
        ------
        ValidationError
            If the id is not safe.
        StorageError
            If the store cannot be read.
        """
        return self._marker(capture_id) is not None

    def list(self) -> list[str]:
        """Ids of the complete captures in the store.

        Returns
        -------
        list of str
            Sorted ids; captures without their completion marker are left out.

        Raises
        ------
        StorageError
            If the store cannot be read.
        """
        base = f"{self._root}/{CAPTURES}"
        try:
            entries = self._call(
                "list",
                self.fs.ls,
                base,
                detail=False,
                refresh=True,
                passthrough=(FileNotFoundError,),
            )
        except FileNotFoundError:
            return []
        ids = {}
        for entry in entries:
            name = str(entry).rstrip("/").rsplit("/", 1)[-1]
            if name.endswith(".zarr"):
                cid = name[: -len(".zarr")]
                if _ID.match(cid) and ".." not in cid:
                    ids[f"{base}/{name}/{MARKER}"] = cid
        if not ids:
            return []
        found = self._call("list", self.fs.cat, list(ids), on_error="return")
        complete = []
        for path, cid in ids.items():
            raw = _lookup(found, path)
            if isinstance(raw, FileNotFoundError) or raw is None:
                continue
            if isinstance(raw, BaseException):
                raise _storage_error("list", self.url, raw, 1) from raw
            if _parse_marker(raw, cid) is not None:
                complete.append(cid)
        return sorted(complete)

    def delete(self, capture_id: str) -> bool:
        """Delete a capture (complete or not): the marker first, then its objects.

        Parameters
        ----------
        capture_id : str
            Capture id.

        Returns
        -------
        bool
            Whether anything was there.

        Raises
        ------
        ValidationError
            If the id is not safe.
        StorageError
            If the store cannot be written.
        """
        prefix = self._prefix(capture_id)
        had_marker = self._rm(f"{prefix}/{MARKER}")
        had_objects = self._rm(prefix, recursive=True)
        if had_marker or had_objects:
            log.info("IQ store %s: deleted capture %s", redact_url(self.url), capture_id)
        return had_marker or had_objects

    # -- write -----------------------------------------------------------------------------

    def write(
        self,
        ds: xr.Dataset,
        *,
        capture_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> WriteResult:
        """Store a capture Dataset; replaces any earlier copy of the same capture id.

        Receivers whose IQ cannot be stored (see :func:`receiver_problem`) are left out with
        their reason, logged, returned and kept in the ``heimdall:skipped_receivers``
        attribute; the others are stored.

        Parameters
        ----------
        ds : xarray.Dataset
            Capture Dataset as built by :func:`heimdall_lab.dataset.build_dataset` (numpy or
            dask backed).
        capture_id : str, optional
            Id to store it under; ``ds.attrs["capture_id"]`` by default.
        on_progress : callable, optional
            Called as ``on_progress(bytes_done, bytes_total)`` after each batch of objects.

        Returns
        -------
        WriteResult
            What was stored, where, and what was skipped.

        Raises
        ------
        ValidationError
            If the id or a receiver name is unsafe, the Dataset is not a capture Dataset, or
            no receiver can be stored.
        StorageError
            If the store is full, denies access or stays unreachable after the retries;
            the capture is then not reported stored (no completion marker).
        """
        t0 = time.perf_counter()
        retries0 = self.retries
        capture_id = check_capture_id(
            capture_id if capture_id is not None else ds.attrs.get("capture_id")
        )
        prepared, stored, skipped = _prepare(ds, capture_id)
        prefix = self._prefix(capture_id)
        url = self.url_for(capture_id)
        objects = _encode(prepared)
        marker = _marker_bytes(capture_id, stored, skipped, objects)
        total = sum(len(v) for v in objects.values()) + len(marker)
        # Never report a half-written capture: drop the marker, then the old objects.
        self._rm(f"{prefix}/{MARKER}")
        self._rm(prefix, recursive=True)
        done = 0
        try:
            body = {k: v for k, v in objects.items() if k != "zarr.json"}
            # Shards, chunks and array metadata; then the root metadata (consolidated), which
            # makes the zarr whole; then the marker, which makes the capture stored.
            for batch in [*_upload_order(body), ["zarr.json"]]:
                payload = {f"{prefix}/{k}": objects[k].to_bytes() for k in batch}
                self._call("write to", self.fs.pipe, payload)
                done += sum(len(v) for v in payload.values())
                if on_progress is not None:
                    on_progress(done, total)
            self._call("write to", self.fs.pipe_file, f"{prefix}/{MARKER}", marker)
        except StorageError:
            log.error("IQ store %s: capture %s not stored", redact_url(self.url), capture_id)
            self._cleanup(prefix)
            raise
        if on_progress is not None:
            on_progress(total, total)
        result = WriteResult(
            url=redact_url(url),
            capture_id=capture_id,
            receivers=tuple(stored),
            skipped=skipped,
            nbytes=total,
            objects=len(objects) + 1,
            retries=self.retries - retries0,
            elapsed_s=time.perf_counter() - t0,
        )
        log.info(
            "IQ store: stored capture %s (%d receivers, %d skipped, %d objects, %.1f MB) at %s",
            capture_id,
            len(stored),
            len(skipped),
            result.objects,
            total / 1e6,
            result.url,
        )
        return result

    def _cleanup(self, prefix: str) -> None:
        """Best effort: remove what a failed write left (it is not listed either way)."""
        try:
            self.fs.rm(prefix, recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:  # cleanup must not hide the real error
            log.warning(
                "IQ store %s: could not remove the incomplete capture (%s); "
                "it is not listed and the next write of the same id replaces it",
                redact_url(self.url),
                type(exc).__name__,
            )

    # -- read ------------------------------------------------------------------------------

    def open(
        self,
        capture_id: str,
        receivers: Sequence[str] | str | None = None,
        start: object = None,
        end: object = None,
    ) -> xr.Dataset:
        """Open a stored capture lazily (dask), optionally some receivers and a time range.

        Parameters
        ----------
        capture_id : str
            Capture id.
        receivers : str or sequence of str, optional
            Receivers to keep, in this order; all by default.
        start, end : datetime, numpy.datetime64, pandas.Timestamp or str, optional
            UTC time range ``[start, end)`` (naive times are UTC). Each receiver keeps the
            samples whose time ``start_time + k / sample_rate`` falls in the range; see
            :func:`select_time`.

        Returns
        -------
        xarray.Dataset
            The capture Dataset, ``iq`` backed by dask (nothing is read until computed).

        Raises
        ------
        ValidationError
            Unsafe id or name, a receiver not in the capture, or a bad time range.
        StorageError
            If the capture is not stored completely, or the store cannot be read.
        """
        url = redact_url(self.url_for(capture_id))
        if self._marker(capture_id) is None:
            partial = self._call(
                "read", self.fs.exists, f"{self._prefix(capture_id)}/zarr.json"
            ) or self._call("read", self.fs.exists, self._prefix(capture_id))
            if partial:
                raise StorageError(
                    f"capture {capture_id} at {url} is incomplete (no completion marker): "
                    "its write failed or is still running; write it again",
                    url=url,
                )
            raise StorageError(f"capture {capture_id} is not in the store {url}", url=url)
        ds = self._call("read", self._open_zarr, capture_id)
        ds = ds.assign_coords(receiver=np.array(ds["receiver"].values.tolist(), dtype=str))
        if receivers is not None:
            wanted = [receivers] if isinstance(receivers, str) else list(receivers)
            for name in wanted:
                check_receiver_name(name)
            have = set(ds["receiver"].values.tolist())
            missing = [n for n in wanted if n not in have]
            if missing:
                raise ValidationError(
                    f"receiver(s) {', '.join(missing)} not in capture {capture_id} "
                    f"(it has {', '.join(sorted(have))})"
                )
            ds = ds.sel(receiver=wanted)
        if start is not None or end is not None:
            ds = select_time(ds, start, end)
        return ds

    def _open_zarr(self, capture_id: str) -> xr.Dataset:
        if self.local:
            store: Any = zarr.storage.LocalStore(self._prefix(capture_id), read_only=True)
        else:
            store = zarr.storage.FsspecStore.from_url(
                self.url_for(capture_id), storage_options=self._options, read_only=True
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            lazy = xr.open_zarr(store, consolidated=True, zarr_format=3, chunks=None)
        # One dask chunk per shard: a full read is one GET per receiver, and a slice still
        # fetches only the inner chunks it needs (the slice reaches zarr).
        encoding = lazy["iq"].encoding
        blocks = encoding.get("shards") or encoding.get("chunks") or lazy["iq"].shape
        ds = lazy.chunk({})
        ds["iq"] = lazy["iq"].chunk(dict(zip(lazy["iq"].dims, blocks, strict=True)))
        return ds


def _lookup(found: Mapping[str, Any], path: str) -> Any:
    if path in found:
        return found[path]
    stripped = path.split("://", 1)[-1]
    for key, value in found.items():
        if key.split("://", 1)[-1] == stripped:
            return value
    return None


def _parse_marker(raw: bytes, capture_id: str) -> dict[str, Any] | None:
    try:
        marker = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("complete") is not True:
        return None
    if marker.get("capture_id") != capture_id:
        return None
    return marker


def _prepare(ds: xr.Dataset, capture_id: str) -> tuple[xr.Dataset, list[str], dict[str, str]]:
    """Check a capture Dataset; drop the receivers that cannot be stored."""
    if "iq" not in ds.data_vars or ds["iq"].dims != ("receiver", "sample"):
        raise ValidationError(
            "not a capture Dataset: it needs an iq variable with dims (receiver, sample)"
        )
    names = [str(n) for n in ds["receiver"].values.tolist()]
    for name in names:
        check_receiver_name(name)
    if len(set(names)) != len(names):
        raise ValidationError(f"capture {capture_id}: receiver names repeat: {names}")
    source = ds
    ds = ds.compute()  # dask-backed input (an opened capture) is read once, here
    skipped: dict[str, str] = {}
    keep: list[int] = []
    for i, name in enumerate(names):
        problem = receiver_problem(ds, i)
        if problem is None:
            keep.append(i)
        else:
            skipped[name] = problem
            log.warning("capture %s: receiver %s not stored: %s", capture_id, name, problem)
    if not keep:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no receivers"
        raise ValidationError(f"capture {capture_id}: nothing to store ({reasons})")
    out = ds.copy(deep=False) if len(keep) == len(names) else ds.isel(receiver=keep)
    for var in out.variables.values():
        var.encoding = {}
    # Variable-length UTF-8 strings: the zarr v3 "string" type other readers understand.
    out = out.assign_coords(receiver=np.array([names[i] for i in keep], dtype=object))
    out.attrs = dict(source.attrs)
    out.attrs["capture_id"] = capture_id
    out.attrs["heimdall:skipped_receivers"] = dict(skipped)
    return out, [names[i] for i in keep], skipped


def _encode(ds: xr.Dataset) -> dict[str, Any]:
    """Encode a capture as zarr v3 objects in memory: key to zarr Buffer."""
    chunk, shard = iq_chunking(ds.sizes["sample"], ds["iq"].dtype.itemsize)
    iq_enc: dict[str, Any] = {
        "chunks": (1, chunk),
        "compressors": (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4),),
        "fill_value": _NAN_IQ,
    }
    if shard is not None:
        iq_enc["shards"] = (1, shard)
    encoding: dict[str, dict[str, Any]] = {"iq": iq_enc}
    for name, var in ds.variables.items():
        if name != "iq" and var.ndim:
            encoding[str(name)] = {"chunks": var.shape}
    objects: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds.to_zarr(
            zarr.storage.MemoryStore(objects),
            mode="w",
            zarr_format=3,
            consolidated=True,
            encoding=encoding,
        )
    return objects


def _upload_order(objects: Mapping[str, Any]) -> Iterator[list[str]]:
    """Keys in batches to upload concurrently (largest first), bounded in bytes and count."""
    batch: list[str] = []
    size = 0
    for key in sorted(objects, key=lambda k: -len(objects[k])):
        n = len(objects[key])
        if batch and (size + n > _BATCH_BYTES or len(batch) >= _BATCH_COUNT):
            yield batch
            batch, size = [], 0
        batch.append(key)
        size += n
    if batch:
        yield batch


def _marker_bytes(
    capture_id: str, stored: list[str], skipped: dict[str, str], objects: Mapping[str, Any]
) -> bytes:
    """The completion marker: what was stored, written last."""
    return json.dumps(
        {
            "format": "heimdall_lab IQ store",
            "format_version": STORE_FORMAT,
            "complete": True,
            "capture_id": capture_id,
            "receivers": stored,
            "skipped": skipped,
            "objects": len(objects) + 1,
            "bytes": sum(len(v) for v in objects.values()),
            "written_at": datetime.now(UTC).isoformat(),
            "software_version": __version__,
        },
        indent=1,
    ).encode()


# -- time selection -------------------------------------------------------------------------

_FRAME_VARS = (
    "frame_time",
    "frame_start",
    "frame_seq",
    "frame_gpssec",
    "frame_gpsnsec",
    "frame_gps_solution",
    "frame_trusted",
    "frame_rssi_dbm",
)


def sample_range(
    start_time: np.datetime64, sample_rate: float, n_samples: int, start: object, end: object
) -> tuple[int, int]:
    """Indices ``[i0, i1)`` of one receiver's samples whose time is in ``[start, end)``.

    Sample ``k`` is at ``start_time + k / sample_rate``.

    Parameters
    ----------
    start_time : numpy.datetime64
        UTC time of sample 0.
    sample_rate : float
        Exact sample rate in Hz.
    n_samples : int
        Samples the receiver delivered.
    start, end : time or None
        Range bounds (open ends when ``None``).

    Returns
    -------
    tuple of int
        ``(i0, i1)`` with ``0 <= i0 <= i1 <= n_samples``.
    """
    t0 = np.datetime64(start_time, "ns").astype(np.int64)

    def index(bound: object, label: str) -> int:
        delta = int(_to_ns(bound, label).astype(np.int64)) - int(t0)
        return math.ceil(delta * sample_rate / _NS)

    i0 = 0 if start is None else index(start, "start")
    i1 = n_samples if end is None else index(end, "end")
    i0 = min(max(i0, 0), n_samples)
    i1 = min(max(i1, i0), n_samples)
    return i0, i1


def select_time(ds: xr.Dataset, start: object = None, end: object = None) -> xr.Dataset:
    """The samples of each receiver between two UTC times, re-based to sample 0.

    Each receiver keeps its samples in ``[start, end)`` (from its own ``start_time`` and exact
    ``sample_rate``), shifted so that its first kept sample is sample 0 and NaN-padded to the
    longest; ``start_time`` becomes the time of that sample, ``n_samples`` the count kept,
    and ``sample_offset`` (new) its index in the stored recording. Frames that start inside
    the range are kept with ``frame_start`` shifted likewise. ``iq`` stays lazy when it is
    dask-backed; the small per-frame variables are loaded.

    Parameters
    ----------
    ds : xarray.Dataset
        Capture Dataset.
    start, end : datetime, numpy.datetime64, pandas.Timestamp or str, optional
        UTC bounds (naive times are taken as UTC); open ends when omitted.

    Returns
    -------
    xarray.Dataset
        The selection. Receivers without a GNSS start time are dropped (and logged).

    Raises
    ------
    ValidationError
        If ``end`` is not after ``start`` or no receiver has a start time.
    """
    if start is not None and end is not None and _to_ns(end, "end") <= _to_ns(start, "start"):
        raise ValidationError(f"time range end {end} is not after start {start}")
    starts = ds["start_time"].values.astype("M8[ns]")
    usable = [i for i, t in enumerate(starts) if not np.isnat(t)]
    for i in sorted(set(range(ds.sizes["receiver"])) - set(usable)):
        log.warning(
            "receiver %s has no GNSS start time: left out of the time selection",
            ds["receiver"].values[i],
        )
    if not usable:
        raise ValidationError("no receiver has a GNSS start time: cannot select by time")
    ds = ds.isel(receiver=usable)
    starts = starts[usable]
    rates = ds["sample_rate"].values.astype(np.float64)
    counts = (
        ds["n_samples"].values.astype(np.int64)
        if "n_samples" in ds.coords
        else np.full(len(usable), ds.sizes["sample"], np.int64)
    )
    ranges = [
        sample_range(starts[r], rates[r], int(counts[r]), start, end) for r in range(len(usable))
    ]
    width = max(i1 - i0 for i0, i1 in ranges)
    iq = ds["iq"].data
    rows = []
    for r, (i0, i1) in enumerate(ranges):
        row = iq[r, i0:i1]
        pad = width - (i1 - i0)
        if pad:
            if isinstance(row, np.ndarray):
                row = np.concatenate([row, np.full(pad, _NAN_IQ)])
            else:
                row = da.concatenate([row, da.full(pad, _NAN_IQ, dtype=np.complex64)])
        rows.append(row)
    if isinstance(iq, np.ndarray):
        new_iq: Any = np.stack(rows) if rows else np.zeros((0, width), np.complex64)
    else:
        new_iq = da.stack(rows)
    frames = ds[[v for v in _FRAME_VARS if v in ds]].load() if "frame_start" in ds else None
    out = ds.drop_vars(["iq", *(list(frames.data_vars) if frames is not None else [])])
    out = out.drop_dims("sample", errors="ignore")
    if "frame" in out.dims:
        out = out.drop_dims("frame")
    out["iq"] = (("receiver", "sample"), new_iq, ds["iq"].attrs)
    if frames is not None:
        fstart = frames["frame_start"].values
        keep = [
            np.flatnonzero((fstart[r] >= i0) & (fstart[r] < i1))
            for r, (i0, i1) in enumerate(ranges)
        ]
        n_frames = max((len(k) for k in keep), default=0)
        for name in frames.data_vars:
            var = frames[name]
            values = var.values
            fill = _frame_fill(values.dtype)
            new = np.full((len(ranges), n_frames), fill, dtype=values.dtype)
            for r, k in enumerate(keep):
                sel = values[r, k]
                if name == "frame_start":
                    sel = sel - ranges[r][0]
                new[r, : len(k)] = sel
            out[name] = (("receiver", "frame"), new, var.attrs)
    i0s = np.array([i0 for i0, _ in ranges], np.int64)
    shift = np.array([round(i0 * _NS / rates[r]) for r, i0 in enumerate(i0s)], "m8[ns]")
    out = out.assign_coords(
        start_time=("receiver", starts + shift),
        n_samples=("receiver", np.array([i1 - i0 for i0, i1 in ranges], np.int64)),
        sample_offset=("receiver", i0s),
    )
    out.attrs = dict(ds.attrs)
    if start is not None:
        out.attrs["selection_start"] = _iso(_to_ns(start, "start"))
    if end is not None:
        out.attrs["selection_end"] = _iso(_to_ns(end, "end"))
    return out


def _frame_fill(dtype: np.dtype) -> Any:
    if dtype.kind == "M":
        return np.datetime64("NaT")
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    return -1


# -- SigMF ----------------------------------------------------------------------------------


def _point(lat: float, lon: float) -> dict[str, Any] | None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    return {"type": "Point", "coordinates": [float(lon), float(lat)]}


def export_sigmf(ds: xr.Dataset, directory: str | Path) -> list[Path]:
    """Write a capture as SigMF: one recording per receiver and a collection.

    Each receiver becomes ``<capture_id>_<receiver>.sigmf-data`` (``cf32_le``, its
    ``n_samples`` samples) and ``.sigmf-meta`` with ``core:sample_rate`` (the exact, GNSS-fitted
    rate), ``core:geolocation`` (GeoJSON point), a capture segment with ``core:frequency`` and
    ``core:datetime`` (the time of sample 0, ns), another at each sequence gap, and one
    annotation per frame with its GNSS timestamp in the ``heimdall`` extension namespace
    (``heimdall:gps_tow_s``, ``heimdall:gps_tow_ns``, ``heimdall:last_gps_solution``,
    ``heimdall:seq``, ``heimdall:trusted``, ``heimdall:datetime``, ``heimdall:rssi_dbm``).
    ``<capture_id>.sigmf-collection`` ties them together with each recording's metadata hash.
    Every recording's metadata is checked with sigmf's validator before it is written (the
    collection schema bundled with sigmf still describes the old tuple form of ``core:streams``
    and rejects the objects sigmf itself writes, so the collection is not schema-checked).

    Parameters
    ----------
    ds : xarray.Dataset
        Capture Dataset (in memory or lazy).
    directory : str or pathlib.Path
        Folder to write into (created if missing); files of the same names are replaced.

    Returns
    -------
    list of pathlib.Path
        The collection file, then each receiver's meta and data files.

    Raises
    ------
    ValidationError
        If the capture id or a receiver name is unsafe as a file name.
    """
    capture_id = check_capture_id(str(ds.attrs.get("capture_id", "capture")))
    names = [check_receiver_name(str(n)) for n in ds["receiver"].values.tolist()]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frequency = float(ds.attrs.get("core:frequency", ds.attrs.get("center_frequency_hz", 0.0)))
    dataset_attrs = _jsonable(dict(ds.attrs))
    written: list[Path] = []
    metas: list[str] = []
    width = ds.sizes["sample"]
    for i, name in enumerate(names):
        one = ds.isel(receiver=i)
        n = int(one["n_samples"]) if "n_samples" in one.coords else width
        base = f"{capture_id}_{name}"
        data_path = directory / f"{base}.sigmf-data"
        np.asarray(one["iq"].values[:n], dtype="<c8").tofile(data_path)
        lat = float(one["latitude"]) if "latitude" in one.coords else math.nan
        lon = float(one["longitude"]) if "longitude" in one.coords else math.nan
        rate = float(one["sample_rate"]) if "sample_rate" in one.coords else math.nan
        if not (math.isfinite(rate) and rate > 0):
            rate = float(ds.attrs.get("core:sample_rate", 12000.0))
        start = one["start_time"].values if "start_time" in one.coords else np.datetime64("NaT")
        glob: dict[str, Any] = {
            sigmf.DATATYPE_KEY: "cf32_le",
            sigmf.SAMPLE_RATE_KEY: rate,
            sigmf.NUM_CHANNELS_KEY: 1,
            sigmf.DESCRIPTION_KEY: f"heimdall_lab capture {capture_id}, receiver {name}",
            sigmf.RECORDER_KEY: str(ds.attrs.get("core:recorder", f"heimdall_lab {__version__}")),
            sigmf.HW_KEY: str(ds.attrs.get("core:hw", "KiwiSDR")),
            sigmf.COLLECTION_KEY: capture_id,
            sigmf.EXTENSIONS_KEY: [dict(_EXTENSION)],
            "heimdall:capture_id": capture_id,
            "heimdall:receiver": name,
            "heimdall:n_samples": n,
            "heimdall:dataset_attrs": dataset_attrs,
        }
        point = _point(lat, lon)
        if point is not None:
            glob[sigmf.GEOLOCATION_KEY] = point
        for coord in ("nominal_rate", "calibration_db", "rssi_dbm", "lost_frames", "complete"):
            if coord in one.coords:
                value = _jsonable(one[coord].values)
                if value is not None:
                    glob[f"heimdall:{coord}"] = value
        if not np.isnat(start):
            glob["heimdall:start_time"] = _iso(start)
        annotations, gaps = _frame_annotations(one, n)
        meta = SigMFFile(
            metadata={"global": glob, "captures": [], "annotations": annotations},
            data_file=data_path,
        )
        first: dict[str, Any] = {sigmf.FREQUENCY_KEY: frequency}
        if not np.isnat(start):
            first[sigmf.DATETIME_KEY] = _iso(start)
        if point is not None:
            first[sigmf.GEOLOCATION_KEY] = point
        meta.add_capture(0, metadata=first)
        for sample_start, when in gaps:
            seg: dict[str, Any] = {sigmf.FREQUENCY_KEY: frequency}
            if when is not None:
                seg[sigmf.DATETIME_KEY] = when
            meta.add_capture(sample_start, metadata=seg)
        meta.validate()
        meta.tofile(directory / base, overwrite=True)
        metas.append(f"{base}.sigmf-meta")
        written += [directory / f"{base}.sigmf-meta", data_path]
    collection = SigMFCollection(metafiles=metas, base_path=directory)
    collection.set_collection_field(
        sigmf.DESCRIPTION_KEY,
        f"heimdall_lab capture {capture_id}: {len(metas)} receivers at {frequency:.0f} Hz",
    )
    collection.set_collection_field(sigmf.EXTENSIONS_KEY, [dict(_EXTENSION)])
    collection.set_collection_field("heimdall:capture_id", capture_id)
    collection.tofile(directory / capture_id, overwrite=True)
    coll_path = directory / f"{capture_id}.sigmf-collection"
    log.info(
        "exported capture %s to SigMF in %s (%d recordings)", capture_id, directory, len(metas)
    )
    return [coll_path, *written]


def _frame_annotations(
    one: xr.Dataset, n: int
) -> tuple[list[dict[str, Any]], list[tuple[int, str | None]]]:
    """Per-frame annotations (GNSS timestamps) and the capture segments at sequence gaps."""
    if "frame_start" not in one:
        return [], []
    fstart = one["frame_start"].values.astype(np.int64)
    valid = np.flatnonzero(fstart >= 0)
    fstart = fstart[valid]

    def col(name: str) -> np.ndarray | None:
        return one[name].values[valid] if name in one else None

    seq, sec, nsec = col("frame_seq"), col("frame_gpssec"), col("frame_gpsnsec")
    sol, trusted, rssi, times = (
        col("frame_gps_solution"),
        col("frame_trusted"),
        col("frame_rssi_dbm"),
        col("frame_time"),
    )
    ends = np.append(fstart[1:], n)
    annotations: list[dict[str, Any]] = []
    gaps: list[tuple[int, str | None]] = []
    for k, s in enumerate(fstart.tolist()):
        a: dict[str, Any] = {
            sigmf.SAMPLE_START_KEY: int(s),
            sigmf.SAMPLE_COUNT_KEY: int(max(ends[k] - s, 0)),
        }
        if sec is not None and nsec is not None:
            a["heimdall:gps_tow_s"] = int(sec[k])
            a["heimdall:gps_tow_ns"] = int(nsec[k])
        if sol is not None:
            a["heimdall:last_gps_solution"] = int(sol[k])
        if seq is not None:
            a["heimdall:seq"] = int(seq[k])
        if trusted is not None:
            a["heimdall:trusted"] = bool(trusted[k])
        when = None
        if times is not None and not np.isnat(times[k]):
            when = _iso(times[k])
            a["heimdall:datetime"] = when
        if rssi is not None and math.isfinite(float(rssi[k])):
            a["heimdall:rssi_dbm"] = float(rssi[k])
        annotations.append(a)
        if k and seq is not None and (int(seq[k]) - int(seq[k - 1])) & 0xFFFFFFFF != 1:
            gaps.append((int(s), when))
    return annotations, gaps


def _sigmf_meta_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    metas: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            collections = sorted(item.glob("*.sigmf-collection"))
            if len(collections) == 1:
                metas += _collection_metas(collections[0])
            else:
                metas += sorted(item.glob("*.sigmf-meta"))
        elif item.name.endswith(".sigmf-collection"):
            metas += _collection_metas(item)
        elif item.name.endswith((".sigmf-meta", ".sigmf-data")):
            metas.append(item.with_name(item.name.rsplit(".", 1)[0] + ".sigmf-meta"))
        else:
            raise FileFormatError(f"{item}: not a SigMF collection, meta or data file")
    out: list[Path] = []
    for m in metas:
        if m not in out:
            out.append(m)
    if not out:
        raise FileFormatError(f"no SigMF recordings in {', '.join(map(str, items))}")
    return out


def _collection_metas(path: Path) -> list[Path]:
    collection = sigmf.fromfile(path)
    if not isinstance(collection, SigMFCollection):
        raise FileFormatError(f"{path}: not a SigMF collection")
    return [path.parent / f"{name}.sigmf-meta" for name in collection.get_stream_names()]


def import_sigmf(paths: str | Path | Iterable[str | Path]) -> xr.Dataset:
    """Read SigMF recordings (for example an :func:`export_sigmf` collection) as a capture.

    Parameters
    ----------
    paths : path or iterable of paths
        A ``.sigmf-collection`` file, ``.sigmf-meta``/``.sigmf-data`` files, or a folder (its
        one collection, else all its recordings). Data checksums are verified.

    Returns
    -------
    xarray.Dataset
        The capture Dataset. Recordings written by :func:`export_sigmf` come back identical
        (samples, exact rates, times, positions, per-frame timestamps, attributes); others
        get what SigMF holds: samples, ``core:sample_rate``, ``core:frequency``,
        ``core:datetime`` and ``core:geolocation``.

    Raises
    ------
    FileFormatError
        If a file is not SigMF, not complex, or fails its checksum.
    ValidationError
        If the recordings are at different frequencies or a receiver name repeats.
    """
    entries: list[tuple[Receiver, Recording, bool]] = []
    extras: list[dict[str, Any]] = []
    frequencies: set[float] = set()
    dataset_attrs: dict[str, Any] | None = None
    capture_id: str | None = None
    for meta_path in _sigmf_meta_paths(paths):
        try:
            rec_file = sigmf.fromfile(meta_path)
        except (sigmf.error.SigMFError, OSError, ValueError) as exc:
            raise FileFormatError(f"{meta_path}: {exc}") from exc
        if not isinstance(rec_file, SigMFFile):
            raise FileFormatError(f"{meta_path}: not a SigMF recording")
        g = rec_file.get_global_info()
        captures = rec_file.get_captures()
        first = captures[0] if captures else {}
        if not str(g.get(sigmf.DATATYPE_KEY, "")).startswith("c"):
            raise FileFormatError(f"{meta_path}: {g.get(sigmf.DATATYPE_KEY)} is not complex IQ")
        samples = np.asarray(rec_file.read_samples(), dtype=np.complex64).reshape(-1)
        stem = meta_path.name[: -len(".sigmf-meta")]
        name = check_receiver_name(str(g.get("heimdall:receiver", stem)))
        rate = float(g[sigmf.SAMPLE_RATE_KEY])
        frames = [a for a in rec_file.get_annotations() if "heimdall:gps_tow_s" in a]
        recording = Recording(
            samples=samples,
            frame_start=np.array([a[sigmf.SAMPLE_START_KEY] for a in frames], np.int64),
            seq=np.array([a.get("heimdall:seq", k) for k, a in enumerate(frames)], np.int64),
            last_gps_solution=np.array(
                [a.get("heimdall:last_gps_solution", 255) for a in frames], np.uint8
            ),
            gpssec=np.array([a["heimdall:gps_tow_s"] for a in frames], np.int64),
            gpsnsec=np.array([a.get("heimdall:gps_tow_ns", 0) for a in frames], np.int64),
            rssi_dbm=np.array([a.get("heimdall:rssi_dbm", np.nan) for a in frames], np.float32),
            nominal_rate=float(g.get("heimdall:nominal_rate", rate)),
        )
        geo = g.get(sigmf.GEOLOCATION_KEY) or first.get(sigmf.GEOLOCATION_KEY)
        lon, lat = (float(geo["coordinates"][0]), float(geo["coordinates"][1])) if geo else (0, 0)
        entries.append(
            (
                Receiver(name, "sigmf.invalid", latitude=lat, longitude=lon),
                recording,
                bool(g.get("heimdall:complete", True)),
            )
        )
        start = g.get("heimdall:start_time") or first.get(sigmf.DATETIME_KEY)
        extras.append(
            {
                "latitude": lat if geo else math.nan,
                "longitude": lon if geo else math.nan,
                "sample_rate": rate,
                "start_time": _parse_iso(start) if start else np.datetime64("NaT", "ns"),
                "calibration_db": g.get("heimdall:calibration_db"),
                "rssi_dbm": g.get("heimdall:rssi_dbm"),
                "frame_time": [
                    _parse_iso(a["heimdall:datetime"])
                    if "heimdall:datetime" in a
                    else np.datetime64("NaT", "ns")
                    for a in frames
                ]
                if any("heimdall:datetime" in a for a in frames)
                else None,
            }
        )
        if sigmf.FREQUENCY_KEY in first:
            frequencies.add(float(first[sigmf.FREQUENCY_KEY]))
        if dataset_attrs is None and isinstance(g.get("heimdall:dataset_attrs"), dict):
            dataset_attrs = g["heimdall:dataset_attrs"]
        capture_id = capture_id or g.get("heimdall:capture_id") or g.get(sigmf.COLLECTION_KEY)
    if len(frequencies) > 1:
        raise ValidationError(
            f"SigMF recordings at different frequencies {sorted(frequencies)} Hz "
            "cannot form one capture"
        )
    names = [e[0].name for e in entries]
    if len(set(names)) != len(names):
        raise ValidationError(f"SigMF recordings repeat a receiver name: {names}")
    frequency = frequencies.pop() if frequencies else math.nan
    duration = max(
        len(e[1].samples) / ex["sample_rate"] for e, ex in zip(entries, extras, strict=True)
    )
    starts = [ex["start_time"] for ex in extras if not np.isnat(ex["start_time"])]
    ds = build_dataset(
        entries,
        frequency,
        duration,
        capture_id=check_capture_id(str(capture_id)) if capture_id else uuid.uuid4().hex,
        gps_reference=min(starts) if starts else None,
    )
    ds = _apply_extras(ds, extras)
    if dataset_attrs is not None:
        ds.attrs = dict(dataset_attrs)
    return ds


def _apply_extras(ds: xr.Dataset, extras: list[dict[str, Any]]) -> xr.Dataset:
    def column(key: str, dtype: Any, default: Any) -> np.ndarray:
        return np.array([default if ex[key] is None else ex[key] for ex in extras], dtype=dtype)

    ds = ds.assign_coords(
        latitude=("receiver", column("latitude", np.float64, math.nan)),
        longitude=("receiver", column("longitude", np.float64, math.nan)),
        sample_rate=("receiver", column("sample_rate", np.float64, math.nan)),
        start_time=("receiver", column("start_time", "M8[ns]", np.datetime64("NaT"))),
        calibration_db=("receiver", column("calibration_db", np.float64, math.nan)),
    )
    if all(ex["rssi_dbm"] is not None for ex in extras):
        ds = ds.assign_coords(rssi_dbm=("receiver", column("rssi_dbm", np.float64, math.nan)))
    if any(ex["frame_time"] is not None for ex in extras):
        values = ds["frame_time"].values.copy()
        for r, ex in enumerate(extras):
            if ex["frame_time"] is not None:
                values[r, : len(ex["frame_time"])] = np.array(ex["frame_time"], "M8[ns]")
        ds["frame_time"] = (("receiver", "frame"), values, ds["frame_time"].attrs)
    return ds


# -- kiwirecorder WAV -----------------------------------------------------------------------


def import_kiwi_wav(
    paths: str | Path | Iterable[str | Path],
    receivers: Mapping[str, Receiver | tuple[float, float]] | None = None,
    frequency_hz: float | None = None,
    *,
    capture_id: str | None = None,
    gps_reference: datetime | np.datetime64 | None = None,
) -> xr.Dataset:
    """Read kiwirecorder IQ WAV files (made at the same time) as one capture Dataset.

    Parameters
    ----------
    paths : path or iterable of paths
        The files, one per receiver. kiwirecorder names them
        ``<YYYYmmddTHHMMSSZ>_<frequency Hz>_<receiver>_iq.wav``; the receiver name,
        frequency and start time are taken from that name when it fits.
    receivers : mapping, optional
        Receiver name to :class:`~heimdall_lab.receivers.Receiver` or ``(latitude,
        longitude)``: where each one is. Without it the positions are NaN.
    frequency_hz : float, optional
        Centre frequency; from the file names when omitted.
    capture_id : str, optional
        Id of the capture; ``kiwi_<time>_<frequency>`` from the file names when they agree,
        else a new UUID.
    gps_reference : datetime or numpy.datetime64, optional
        A UTC time within half a week of the recordings, to resolve the GPS week; the time in
        the file names by default (the wall clock when there is none).

    Returns
    -------
    xarray.Dataset
        The capture Dataset (see :func:`heimdall_lab.dataset.build_dataset`), every receiver
        marked complete.

    Raises
    ------
    FileFormatError
        If a file is not a kiwi IQ WAV.
    ValidationError
        If a receiver has no position in ``receivers``, names repeat, or the frequency is
        unknown.
    """
    items = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not items:
        raise ValidationError("no kiwi IQ WAV files given")
    entries: list[tuple[Receiver, Recording, bool]] = []
    times: set[str] = set()
    freqs: set[int] = set()
    for path in items:
        recording = read_kiwi_wav(path)
        match = _KIWI_FILE.match(path.stem)
        name = match["name"] if match else path.stem
        if match:
            times.add(match["time"])
            freqs.add(int(match["freq"]))
        if receivers is None:
            receiver = Receiver(check_receiver_name(name), "kiwisdr.invalid")
        elif name in receivers:
            given = receivers[name]
            receiver = (
                given
                if isinstance(given, Receiver)
                else Receiver(check_receiver_name(name), "kiwisdr.invalid", 8073, *given)
            )
        else:
            raise ValidationError(
                f"{path.name}: no position for receiver {name}; pass it in receivers "
                f"(given: {', '.join(sorted(receivers)) or 'none'})"
            )
        entries.append((receiver, recording, True))
    names = [e[0].name for e in entries]
    if len(set(names)) != len(names):
        raise ValidationError(f"kiwi WAV files repeat a receiver: {names}")
    if frequency_hz is None:
        if len(freqs) != 1 or len(items) != sum(1 for p in items if _KIWI_FILE.match(p.stem)):
            raise ValidationError("frequency_hz is needed: the file names do not give one")
        frequency_hz = float(freqs.pop() if len(freqs) == 1 else 0)
    stamps = sorted(datetime.strptime(t, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for t in times)
    if gps_reference is None:
        if stamps:
            gps_reference = stamps[0]
        else:
            log.warning("no time in the kiwi WAV file names: the GPS week is taken from now")
    if capture_id is None:
        if len(times) == 1 and all(_KIWI_FILE.match(p.stem) for p in items):
            capture_id = f"kiwi_{next(iter(times))}_{round(frequency_hz)}"
        else:
            capture_id = uuid.uuid4().hex
    duration = max(len(e[1].samples) / e[1].nominal_rate for e in entries)
    ds = build_dataset(
        entries,
        frequency_hz,
        duration,
        capture_id=check_capture_id(capture_id),
        gps_reference=gps_reference,
    )
    if receivers is None:
        log.warning("kiwi WAV import without receiver positions: latitude/longitude are NaN")
        nan = np.full(len(entries), np.nan)
        ds = ds.assign_coords(latitude=("receiver", nan), longitude=("receiver", nan.copy()))
    ds.attrs["source"] = "kiwirecorder IQ WAV: " + ", ".join(p.name for p in items)
    return ds
