"""Firmware profiles: one YAML file per device model, validated into frozen models. Imports nothing from
fleet."""

from firmware_profiles.loader import (
    DEFAULT_PROFILE_DIR,
    ProfileError,
    ProfileIssue,
    artifact_path,
    check_all,
    check_profiles_command,
    load_all,
    load_profile,
    load_profile_key,
    parse_profile,
)
from firmware_profiles.schema import (
    DeviceSettings,
    ErrorCodeRule,
    FirmwareProfile,
    FirmwareVersion,
    HealthRules,
    MqttTransport,
    RebootRule,
    ScreenTimePolicy,
    SerialTransport,
)

__all__ = [
    "DEFAULT_PROFILE_DIR",
    "DeviceSettings",
    "ErrorCodeRule",
    "FirmwareProfile",
    "FirmwareVersion",
    "HealthRules",
    "MqttTransport",
    "ProfileError",
    "ProfileIssue",
    "RebootRule",
    "ScreenTimePolicy",
    "SerialTransport",
    "artifact_path",
    "check_all",
    "check_profiles_command",
    "load_all",
    "load_profile",
    "load_profile_key",
    "parse_profile",
]
