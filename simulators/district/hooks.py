"""Things outside the simulator that some scenarios need (the broker, the service's clock and calendar)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from simulators.district.clock import Anchor
from simulators.district.labs import StartAgent


@dataclass(frozen=True)
class Hooks:
    """Things outside the simulator that some scenarios need; absent ones make those scenarios report
    'skipped'."""

    restart_broker: Callable[[], Awaitable[None]] | None = None
    set_service_clock: Callable[[Anchor], Awaitable[None]] | None = None
    add_exam_day: Callable[[str, str], Awaitable[None]] | None = None  # (school code, ISO date)
    service_pids: Callable[[], dict[str, int]] | None = None  # name -> pid, for CPU/RSS sampling
    # (school code, command, args): as a technician would through the commands API
    send_command: Callable[[str, str, dict[str, Any]], Awaitable[Any]] | None = None
    # Runs the real edge agent for one lab room over its bench of pty devices (see simulators.district.labs)
    start_lab_agent: StartAgent | None = None
