"""The reference-data generation: one counter that database triggers move (migration 0045).

Every process that keeps devices, rooms, models, schools or timetables in memory (the service, each
`labfleet ingest` worker) polls this one row to learn that its copy is stale, whoever made the change.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer
from sqlalchemy.orm import Mapped, mapped_column

from fleet.persistence.base import Base

# The single row's key.
REFERENCE_ROW = 1


class ReferenceGeneration(Base):
    __tablename__ = "reference_generation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
