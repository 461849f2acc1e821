"""Closed vocabularies of the domain."""

from __future__ import annotations

from enum import StrEnum


class RoomKind(StrEnum):
    SMART_CLASSROOM = "smart_classroom"
    DIGITAL_LAB = "digital_lab"
    AI_LAB = "ai_lab"


class AiLabTier(StrEnum):
    BASIC_EXPERIENCE = "basic_experience"
    SUBJECT_INTEGRATION = "subject_integration"
    ADVANCED_RESEARCH = "advanced_research"


class DeviceKind(StrEnum):
    TERMINAL = "terminal"
    ROBOT = "robot"
    MCU_KIT = "mcu_kit"
    SENSOR = "sensor"


class Transport(StrEnum):
    MQTT = "mqtt"
    SERIAL = "serial"


class DeviceStatus(StrEnum):
    ORDERED = "ordered"
    RECEIVED = "received"
    PROVISIONED = "provisioned"
    IN_SERVICE = "in_service"
    IN_REPAIR = "in_repair"
    RETIRED = "retired"
    LOST = "lost"


class Ownership(StrEnum):
    OWNED = "owned"
    LEASED = "leased"


class Role(StrEnum):
    ADMIN = "admin"
    TECHNICIAN = "technician"
    IT_STAFF = "it_staff"
    PROCUREMENT = "procurement"
    AUDITOR = "auditor"


class CalendarKind(StrEnum):
    TERM = "term"
    HOLIDAY = "holiday"
    EXAM_DAY = "exam_day"
