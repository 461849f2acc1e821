"""Which background parts `labfleet serve` starts, chosen from settings.

Each hook carries its `Stage` (fleet/runtime/state.py) and create_app runs them in stage order: the device
plane, then the rollout engine (it sends through the plane's broker), then the jobs.
"""

from __future__ import annotations

from fleet.runtime.state import RuntimeHook, Stage
from fleet.settings import Settings


def default_hooks(settings: Settings) -> list[RuntimeHook]:
    """The hooks these settings ask for, one per stage that runs."""
    hooks: dict[Stage, RuntimeHook] = {}
    if settings.mqtt.broker != "none":
        from fleet.runtime.plane import device_plane_hook

        hooks[Stage.PLANE] = device_plane_hook
    from fleet.runtime.rollouts import rollout_hook

    hooks[Stage.ROLLOUTS] = rollout_hook(settings)
    if settings.reports.monthly_enabled:
        from fleet.runtime.report_job import monthly_reports_hook

        hooks[Stage.JOBS] = monthly_reports_hook()
    out = [hooks[s] for s in Stage if s in hooks]
    if settings.retention.enabled:
        from fleet.runtime.retention_job import retention_hook

        out.append(retention_hook())  # also Stage.JOBS: hooks run stably sorted by stage
    return out
