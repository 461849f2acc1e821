"""Indexes the reports need on other parts' tables (migration 0030). Imported by fleet.persistence.models."""

from __future__ import annotations

from sqlalchemy import Index

from fleet.persistence.models_mqtt import UsageActive

# Utilisation sums active minutes per device over a date range, optionally for some schools. This index covers
# that query, so a year of 10,000 devices' hourly roll-ups (~5.5M rows) is read from the index in device order:
# no table lookups and no sort, whatever order ingest wrote the rows in (SQLite otherwise picks the unique
# (device_id, bucket_start) index and fetches every row from the table: ~3x slower).
USAGE_ACTIVE_REPORT = Index("ix_usage_active_report", UsageActive.device_id, UsageActive.bucket_start,
                            UsageActive.school_id, UsageActive.active_minutes)
