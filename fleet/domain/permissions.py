"""Which role may do what. Scope (which schools) is checked separately, by the principal."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fleet.domain.enums import Role


class Permission(StrEnum):
    READ_INVENTORY = "read_inventory"  # districts, schools, rooms, models, devices, timetables
    MANAGE_SCHOOLS = "manage_schools"  # districts and schools
    MANAGE_ROOMS = "manage_rooms"  # rooms and timetables
    MANAGE_MODELS = "manage_models"  # the device-model catalogue
    MANAGE_DEVICES = "manage_devices"  # devices, lifecycle transitions, imports
    READ_AUDIT = "read_audit"
    MANAGE_TOKENS = "manage_tokens"
    # Used by the device plane, rollouts and reports.
    MANAGE_ENROLLMENT = "manage_enrollment"  # claim tokens, device credentials
    SEND_COMMANDS = "send_commands"
    MANAGE_ALERTS = "manage_alerts"
    MANAGE_ROLLOUTS = "manage_rollouts"
    READ_OPERATIONS = "read_operations"  # telemetry state, presence, alerts, stats, rollouts
    READ_REPORTS = "read_reports"
    # The yearly data-security inspection: who holds access, stale credentials, privacy, the audit chain.
    INSPECT_SECURITY = "inspect_security"


_ALL = frozenset(Permission)
_READ = frozenset({Permission.READ_INVENTORY, Permission.READ_OPERATIONS})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: _ALL,
    Role.TECHNICIAN: _READ
    | {
        Permission.MANAGE_ROOMS,
        Permission.MANAGE_DEVICES,
        Permission.MANAGE_ENROLLMENT,
        Permission.SEND_COMMANDS,
        Permission.MANAGE_ALERTS,
    },
    Role.IT_STAFF: _READ
    | {
        Permission.MANAGE_ROOMS,
        Permission.SEND_COMMANDS,
        Permission.MANAGE_ALERTS,
        Permission.MANAGE_ROLLOUTS,
        Permission.READ_REPORTS,
    },
    Role.PROCUREMENT: _READ | {Permission.MANAGE_MODELS, Permission.READ_REPORTS},
    Role.AUDITOR: _READ | {Permission.READ_AUDIT, Permission.READ_REPORTS, Permission.INSPECT_SECURITY},
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a role and the schools it may see (all of them when district_wide)."""

    name: str
    role: Role
    district_wide: bool
    school_ids: frozenset[int]
    token_id: int | None = None
    # Set when a console user signed in: the same role and scope as a token, named as the user in the audit.
    user_id: int | None = None

    def has(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def sees_school(self, school_id: int | None) -> bool:
        return self.district_wide or (school_id is not None and school_id in self.school_ids)

    @property
    def actor(self) -> str:
        """The name written to the audit log and lifecycle history."""
        if self.user_id is not None:
            return f"user:{self.user_id}:{self.name}"
        return f"{self.role}:{self.name}" if self.token_id is None else f"token:{self.token_id}:{self.name}"


SYSTEM = Principal(name="system", role=Role.ADMIN, district_wide=True, school_ids=frozenset())
