"""ORM models of the tables, for the benchmark that compares ORM writes with COPY."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- ORM mapping


class Base(DeclarativeBase):
    """Declarative base of the ORM mapping (the schema itself comes from ``sql/``)."""


class WebSDR(Base):
    """A row of ``websdrs``: one receiver."""

    __tablename__ = "websdrs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text, unique=True)
    url: Mapped[str] = mapped_column(sa.Text)
    host: Mapped[str] = mapped_column(sa.Text)
    port: Mapped[int] = mapped_column(sa.Integer)
    protocol: Mapped[str] = mapped_column(sa.Text)
    location_name: Mapped[str] = mapped_column(sa.Text)
    latitude: Mapped[float] = mapped_column(sa.Double)
    longitude: Mapped[float] = mapped_column(sa.Double)
    min_frequency_hz: Mapped[float] = mapped_column(sa.Double)
    max_frequency_hz: Mapped[float] = mapped_column(sa.Double)
    calibration_db: Mapped[float | None] = mapped_column(sa.Double)
    is_active: Mapped[bool] = mapped_column(sa.Boolean)
    timeout_seconds: Mapped[float] = mapped_column(sa.Double)
    retry_count: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    # What the public directory says (migration 007).
    source: Mapped[str] = mapped_column(sa.Text)
    directory_id: Mapped[str | None] = mapped_column(sa.Text)
    title: Mapped[str] = mapped_column(sa.Text)
    tls: Mapped[bool] = mapped_column(sa.Boolean)
    users: Mapped[int | None] = mapped_column(sa.Integer)
    users_max: Mapped[int | None] = mapped_column(sa.Integer)
    has_gps: Mapped[bool | None] = mapped_column(sa.Boolean)
    gps_good: Mapped[int | None] = mapped_column(sa.Integer)
    fixes_min: Mapped[int | None] = mapped_column(sa.Integer)
    tdoa_ch: Mapped[int | None] = mapped_column(sa.Integer)
    time_limited: Mapped[bool | None] = mapped_column(sa.Boolean)
    antenna: Mapped[str] = mapped_column(sa.Text)
    sw_version: Mapped[str] = mapped_column(sa.Text)
    snr_db: Mapped[float | None] = mapped_column(sa.Double)
    directory_updated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_seen_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_checked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_check_error: Mapped[str | None] = mapped_column(sa.Text)
    notes: Mapped[str] = mapped_column(sa.Text)
    listed: Mapped[bool | None] = mapped_column(sa.Boolean)


class Capture(Base):
    """A row of ``captures``: one acquisition of one frequency from several receivers."""

    __tablename__ = "captures"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    start_time: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    frequency_hz: Mapped[float] = mapped_column(sa.Double)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(sa.Text)
    progress_percent: Mapped[float] = mapped_column(sa.Double)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    iq_url: Mapped[str | None] = mapped_column(sa.Text)
    software_version: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    session_id: Mapped[str | None] = mapped_column(sa.Text)
    session_step: Mapped[int | None] = mapped_column(sa.Integer)


class Measurement(Base):
    """A row of ``measurements``: one receiver's metrics at one time of one capture."""

    __tablename__ = "measurements"

    capture_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("captures.id"), primary_key=True)
    websdr_id: Mapped[int] = mapped_column(sa.ForeignKey("websdrs.id"), primary_key=True)
    timestamp_utc: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), primary_key=True)
    frequency_hz: Mapped[float] = mapped_column(sa.Double)
    sample_rate: Mapped[float | None] = mapped_column(sa.Double)
    samples_count: Mapped[int | None] = mapped_column(sa.BigInteger)
    snr_db: Mapped[float | None] = mapped_column(sa.Double)
    frequency_offset_hz: Mapped[float | None] = mapped_column(sa.Double)
    signal_power_dbfs: Mapped[float | None] = mapped_column(sa.Double)
    signal_power_dbm: Mapped[float | None] = mapped_column(sa.Double)
    noise_power_dbfs: Mapped[float | None] = mapped_column(sa.Double)
    noise_power_dbm: Mapped[float | None] = mapped_column(sa.Double)
    cn0_dbhz: Mapped[float | None] = mapped_column(sa.Double)
    occupied_bandwidth_hz: Mapped[float | None] = mapped_column(sa.Double)
    signal_present: Mapped[bool | None] = mapped_column(sa.Boolean)
    rssi_dbm: Mapped[float | None] = mapped_column(sa.Double)
    psd: Mapped[list[float] | None] = mapped_column(ARRAY(REAL))
    psd_resolution_hz: Mapped[float | None] = mapped_column(sa.Double)
    iq_path: Mapped[str | None] = mapped_column(sa.Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
