"""The simulation's own counters: everything the load report needs, counted on the simulator's side."""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class Stats:
    """Everything the report needs, counted on the simulator's side."""

    started_mono: float = 0.0
    connects: int = 0
    connect_failures: int = 0
    connack_refused: int = 0
    connack_codes: dict[int, int] = field(default_factory=dict)
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    connect_latency: list[float] = field(default_factory=list)  # socket open -> CONNACK, seconds
    connect_times: list[float] = field(default_factory=list)  # real seconds since start of each CONNACK
    connack_mono: dict[str, float] = field(default_factory=dict)  # first CONNACK per terminal (monotonic)
    garbage: dict[str, int] = field(default_factory=dict)
    error_replies: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)
    # school -> simulated minute (epoch minute) -> bytes reported in that minute
    bytes_by_school: dict[str, dict[int, int]] = field(
        default_factory=lambda: collections.defaultdict(lambda: collections.defaultdict(int))
    )
    series: list[dict[str, float]] = field(default_factory=list)
    probe_latency: list[float] = field(default_factory=list)
    probe_late: int = 0
    loop_lag_max: float = 0.0  # worst event-loop lag since the sampler last read it (seconds)
    events: list[tuple[float, str]] = field(default_factory=list)

    def on_connect(self, serial: str, latency: float) -> None:
        self.connects += 1
        self.connect_latency.append(latency)
        now = time.monotonic()
        self.connect_times.append(now - self.started_mono)
        self.connack_mono.setdefault(serial, now)

    def add_bytes(self, school: str, n: int, at_ms: int) -> None:
        self.bytes_by_school[school][at_ms // 60_000] += n

    def mark(self, text: str) -> None:
        self.events.append((round(time.monotonic() - self.started_mono, 2), text))
        logger.info("%s", text)

    def mark_once(self, text: str) -> None:
        if all(e[1] != text for e in self.events):
            self.mark(text)
