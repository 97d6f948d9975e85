"""The columns of a measurement row: one definition for the code that makes rows and the SQL.

A measurement is one receiver's metrics for one capture at one time, as stored in the
``measurements`` table. :mod:`heimdall_lab.processing` builds these rows from a capture
Dataset, :mod:`heimdall_lab.db` writes and reads them, :mod:`heimdall_lab.spool` keeps them on
disk, and :mod:`heimdall_lab.batch` rewrites them. All of them take the columns from here, so
adding a column means one line in :data:`MEASUREMENT_TYPES` (and a numbered SQL migration in
``heimdall_lab/db/sql`` adding it to the table). A new column named as a
:class:`heimdall_lab.dsp.SignalMetrics` field is filled from the metrics without more code.

This module imports nothing from the package, so every layer can depend on it.
"""

from __future__ import annotations

#: ``(column, SQL type)`` of the ``measurements`` table, in COPY order. The type picks the
#: binary encoder when writing (``float8``, ``int8``, ``int4``, ``bool``, ``text``,
#: ``timestamptz``, ``float4[]``, ``jsonb``).
MEASUREMENT_TYPES: tuple[tuple[str, str], ...] = (
    ("capture_id", "text"),
    ("websdr_id", "int4"),
    ("timestamp_utc", "timestamptz"),
    ("frequency_hz", "float8"),
    ("sample_rate", "float8"),
    ("samples_count", "int8"),
    ("snr_db", "float8"),
    ("frequency_offset_hz", "float8"),
    ("signal_power_dbfs", "float8"),
    ("signal_power_dbm", "float8"),
    ("noise_power_dbfs", "float8"),
    ("noise_power_dbm", "float8"),
    ("cn0_dbhz", "float8"),
    ("occupied_bandwidth_hz", "float8"),
    ("signal_present", "bool"),
    ("rssi_dbm", "float8"),
    ("psd", "float4[]"),
    ("psd_resolution_hz", "float8"),
    ("iq_path", "text"),
    ("metadata", "jsonb"),
)

#: Key columns that the database fills in (the capture, and the receiver's row id).
KEY_COLUMNS: tuple[str, ...] = ("capture_id", "websdr_id")

#: Columns a measurement row carries besides its ``receiver`` (name) or ``websdr_id``.
MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(
    c for c, _ in MEASUREMENT_TYPES if c not in KEY_COLUMNS
)

#: Scalar columns computed from the IQ and its timestamps (what a reprocess must reproduce
#: exactly): every column but the spectrum, the IQ location and the metadata.
MEASURED_COLUMNS: tuple[str, ...] = tuple(
    c for c in MEASUREMENT_COLUMNS if c not in ("psd", "iq_path", "metadata")
)

#: Metric names as :class:`heimdall_lab.dsp.SignalMetrics` spells them -> their column.
METRIC_ALIASES: dict[str, str] = {"sample_rate_hz": "sample_rate", "n_samples": "samples_count"}

#: Keys of a row's ``metadata`` that describe the acquisition rather than the IQ; a reprocess
#: keeps them from the rows it replaces.
ACQUISITION_METADATA: tuple[str, ...] = ("status", "reason", "lost_frames", "skipped_frames")

__all__ = [
    "ACQUISITION_METADATA",
    "KEY_COLUMNS",
    "MEASURED_COLUMNS",
    "MEASUREMENT_COLUMNS",
    "MEASUREMENT_TYPES",
    "METRIC_ALIASES",
]
