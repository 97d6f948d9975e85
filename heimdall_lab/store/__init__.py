"""The IQ store: captures kept as zarr v3 on a local folder or S3, found by id, read lazily."""

from __future__ import annotations

from heimdall_lab.store.iq import (
    CAPTURES,
    ENV_IQ_URL,
    MARKER,
    IQStore,
    WriteResult,
    default_iq_url,
    iq_chunking,
    is_connection_error,
    receiver_problem,
    s3_storage_options,
)

__all__ = [
    "CAPTURES",
    "ENV_IQ_URL",
    "MARKER",
    "IQStore",
    "WriteResult",
    "default_iq_url",
    "iq_chunking",
    "is_connection_error",
    "receiver_problem",
    "s3_storage_options",
]
