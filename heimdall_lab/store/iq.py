"""The IQ store: captures kept as zarr v3, findable by id, readable lazily; SigMF in and out.

A capture Dataset (see :mod:`heimdall_lab.dataset`) is written to
``<iq_url>/captures/<capture_id>.zarr``, where ``iq_url`` is a local folder
(``$HEIMDALL_IQ_URL``, else ``<data home>/iq``, see :mod:`heimdall_lab.home`) or any fsspec URL, ``s3://bucket/prefix``
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

Credentials in the URL
    ``s3://KEY:SECRET@bucket/prefix`` works too: the key and secret are taken out of the URL
    and handed to s3fs as options. :attr:`IQStore.url`, every message, log line, marker and
    returned URL show it masked (``s3://***@bucket/prefix``); such a masked URL, given back to
    :class:`IQStore`, means "the environment's credentials".
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import fsspec
import numpy as np
import xarray as xr
import zarr
from tenacity import RetryCallState
from zarr.codecs import BloscCodec

from heimdall_lab.dataset import _NAN_IQ, select_time
from heimdall_lab.errors import HeimdallError, StorageError, ValidationError
from heimdall_lab.home import home_path
from heimdall_lab.ids import check_capture_id, check_receiver_name, is_capture_id
from heimdall_lab.recording import FRAME_SAMPLES
from heimdall_lab.retry import RetryPolicy
from heimdall_lab.store import stream
from heimdall_lab.urls import MASK, mask_url, redact, secrets_in, split_credentials
from heimdall_lab.versions import __version__

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

ProgressCallback = Callable[[int, int], None]


def store_url_of(capture_url: str, capture_id: str) -> str | None:
    """The store URL of a capture's URL (the inverse of :meth:`IQStore.url_for`).

    Parameters
    ----------
    capture_url : str
        ``<store url>/captures/<capture_id>.zarr``, as a capture row's ``iq_url`` holds it.
    capture_id : str
        The capture.

    Returns
    -------
    str or None
        The store URL; None when ``capture_url`` is not that capture's URL in a store.
    """
    suffix = f"/{CAPTURES}/{check_capture_id(capture_id)}.zarr"
    return capture_url[: -len(suffix)] if capture_url.endswith(suffix) else None


def default_iq_url() -> str:
    """The store URL used when none is given.

    Returns
    -------
    str
        ``$HEIMDALL_IQ_URL`` if set, else the absolute path of ``iq`` in the data home
        (:func:`heimdall_lab.home.data_home`: ``$HEIMDALL_HOME`` or the per-user data
        folder), the same from any working directory.
    """
    env = os.environ.get(ENV_IQ_URL, "").strip()
    return env or str(home_path("iq"))


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
        # One retry layer: the store's RetryPolicy, not botocore's as well.
        "retries": {"max_attempts": 1, "mode": "standard"},
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
    chunk = -(-math.ceil(n_samples / n_chunks) // FRAME_SAMPLES) * FRAME_SAMPLES
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


@functools.cache  # botocore and aiohttp load only once a store error needs them
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
    return any(isinstance(e, _connection_types()) for e in _chain(exc))


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


def _storage_error(
    action: str, url: str, exc: BaseException, attempts: int, secrets: Sequence[str] = ()
) -> StorageError:
    """Map a filesystem or S3 error to a :class:`StorageError` that says what to do.

    The error's own text (botocore and s3fs echo URLs, paths and sometimes keys) is redacted,
    with ``secrets`` (the store's credentials) masked wherever they appear.
    """
    url = mask_url(url)
    code = _s3_code(exc)
    eno = _errno(exc)
    detail = redact(f"{type(exc).__name__}: {exc}", secrets)
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
        :func:`s3_storage_options`) and the credentials of an ``s3://KEY:SECRET@bucket`` URL.
        Keys or secrets passed either way are used, never logged or stored.
    retry : RetryPolicy, optional
        Retries of connection errors (a remote store only: a local folder is never retried).

    Attributes
    ----------
    url : str
        The store URL, credentials masked (``s3://***@bucket/prefix`` when the URL held them).

    Raises
    ------
    ValidationError
        If the URL is empty, or holds credentials s3fs cannot take from it.
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
        self.local = "://" not in url
        # A local folder has no network to wait for: its errors are final at once.
        self.retry = RetryPolicy(attempts=1) if self.local else (retry or RetryPolicy())
        if self.local:
            self.url = os.path.abspath(os.path.expanduser(url))
            self._options: dict[str, Any] = {}
            self.fs: fsspec.AbstractFileSystem = fsspec.filesystem("file", auto_mkdir=True)
            self._root = self.url
        else:
            url = url.rstrip("/")
            protocol = url.split("://", 1)[0].lower()
            base = s3_storage_options() if protocol in _S3_PROTOCOLS else {}
            bare, given = _url_credentials(url, protocol)
            self.url = mask_url(url)
            self._options = _merge(_merge(base, given), storage_options or {})
            self._bare_url = bare
            self.fs, self._root = fsspec.url_to_fs(bare, **self._options)
            self._root = self._root.rstrip("/")
        # What error texts must never show (botocore and s3fs may echo what they were given).
        self._secrets = secrets_in([url, self._options])
        self.retries = 0

    def __repr__(self) -> str:
        return f"IQStore({mask_url(self.url)!r})"

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
        url = mask_url(self.url)
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
                redact(exc, self._secrets),
                state.attempt_number,
                policy.attempts,
                wait,
            )

        retrying = policy.retrying(is_connection_error, before_sleep=before_sleep)
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
            raise _storage_error(action, self.url, exc, tries, self._secrets) from exc
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
                if is_capture_id(cid):
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
                raise _storage_error("list", self.url, raw, 1, self._secrets) from raw
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
            log.info("IQ store %s: deleted capture %s", mask_url(self.url), capture_id)
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
            log.error("IQ store %s: capture %s not stored", mask_url(self.url), capture_id)
            self._cleanup(prefix)
            raise
        if on_progress is not None:
            on_progress(total, total)
        result = WriteResult(
            url=mask_url(url),
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
                mask_url(self.url),
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
        url = mask_url(self.url_for(capture_id))
        marker = self._marker(capture_id)
        manifest = stream.read_manifest(self, capture_id) if marker is None else None
        if marker is None and manifest is None:
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
        if marker is None or marker.get("layout") == "stream":
            # Streamed: cut to what is stored; without its marker it is still being written
            # (or its process died: heimdall-lab sync completes it).
            ds = stream.trim_stream(ds, in_progress=marker is None)
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
            url = f"{self._bare_url}/{CAPTURES}/{check_capture_id(capture_id)}.zarr"
            store = zarr.storage.FsspecStore.from_url(
                url, storage_options=self._options, read_only=True
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


def _url_credentials(url: str, protocol: str) -> tuple[str, dict[str, Any]]:
    """The URL fsspec is given, and the options carrying the credentials taken out of it."""
    bare, user, password = split_credentials(url)
    if user is None or MASK in (user, password):
        # No credentials, or masked ones (a URL this package wrote): the environment's.
        return (bare if user is not None else url), {}
    if protocol in _S3_PROTOCOLS and password is not None:
        return bare, {"key": user, "secret": password}
    if password is None and protocol not in _S3_PROTOCOLS:
        return url, {}  # user information that is no secret (abfs://container@account)
    raise ValidationError(
        f"store URL {mask_url(url)}: give S3 credentials as s3://KEY:SECRET@bucket/prefix, and "
        "other credentials in storage_options or the environment (for S3: AWS_ACCESS_KEY_ID "
        f"and AWS_SECRET_ACCESS_KEY), not in a {protocol}:// URL"
    )


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
