"""Which background parts `labfleet serve` starts, chosen from settings."""

from __future__ import annotations

from fleet.app import RuntimeHook
from fleet.settings import Settings


def default_hooks(settings: Settings) -> list[RuntimeHook]:
    """The device plane, jobs and metrics register here as they are built."""
    hooks: list[RuntimeHook] = []
    if settings.mqtt.broker != "none":
        from fleet.runtime.plane import device_plane_hook

        hooks.append(device_plane_hook)
    # After the plane: the rollout job sends update commands through the plane's broker when there is one.
    from fleet.runtime.rollouts import rollout_hook

    hooks.append(rollout_hook(settings))
    if settings.reports.monthly_enabled:
        from fleet.runtime.report_job import monthly_reports_hook

        hooks.append(monthly_reports_hook())
    return hooks
