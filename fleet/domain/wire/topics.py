"""Topics: `<prefix>/v1/<school>/<device>/<channel>`, built and parsed, and the identities they hold."""

from __future__ import annotations

from dataclasses import dataclass

from fleet.domain.wire.limits import DEVICE_IDENTITY_RE, IDENTITY_RE, MAX_TOPIC_CHARS, TOPIC_VERSION
from fleet.domain.wire.refusals import Reason, Rejection
from fleet.domain.wire.vocabulary import Channel


class InvalidIdentity(ValueError):
    """An identity that cannot appear as one topic level."""


def check_identity(value: str) -> str:
    """Return `value` if it is a legal device or school identity, else raise InvalidIdentity."""
    if not isinstance(value, str) or not IDENTITY_RE.match(value):
        raise InvalidIdentity(f"identity {value!r} must match {IDENTITY_RE.pattern}")
    return value


def is_identity(value: str) -> bool:
    return isinstance(value, str) and IDENTITY_RE.match(value) is not None


def check_device_identity(value: str) -> str:
    """Return `value` if it can be a device identity (a topic level and a broker username), else raise."""
    if isinstance(value, str) and ":" in value and IDENTITY_RE.match(value):
        raise InvalidIdentity(
            f"device identity {value!r} holds a ':', which an MQTT username cannot "
            f"(mosquitto's password file is username:hash); use '-' instead"
        )
    if not is_device_identity(value):
        raise InvalidIdentity(f"device identity {value!r} must match {DEVICE_IDENTITY_RE.pattern}")
    return value


def is_device_identity(value: str) -> bool:
    return isinstance(value, str) and DEVICE_IDENTITY_RE.match(value) is not None


@dataclass(frozen=True, slots=True)
class Topics:
    """Builds and parses topics under one prefix: `<prefix>/v1/<school>/<device>/<channel>`."""

    prefix: str = "labfleet"

    def __post_init__(self) -> None:
        parts = self.prefix.split("/")
        if (
            not self.prefix
            or any(not p or "+" in p or "#" in p for p in parts)
            or self.prefix.startswith("$")
        ):
            raise InvalidIdentity(f"topic prefix {self.prefix!r} must be non-empty levels without wildcards")

    def base(self, school: str, device: str) -> str:
        return f"{self.prefix}/{TOPIC_VERSION}/{check_identity(school)}/{check_identity(device)}"

    def topic(self, school: str, device: str, channel: Channel | str) -> str:
        return f"{self.base(school, device)}/{Channel(channel).value}"

    def uplink_filter(self, channel: Channel | str = "+") -> str:
        """Subscription filter for one uplink channel (or all with '+') of every device."""
        ch = channel if channel == "+" else Channel(channel).value
        return f"{self.prefix}/{TOPIC_VERSION}/+/+/{ch}"

    def shared(self, group: str, topic_filter: str) -> str:
        """A shared-subscription filter (`$share/<group>/<filter>`) spreading one stream over N workers."""
        return f"$share/{check_identity(group)}/{topic_filter}"

    def parse(self, topic: str) -> TopicRef | Rejection:
        """Split an inbound topic into (school, device, channel), or a Rejection."""
        if len(topic) > MAX_TOPIC_CHARS:
            return Rejection(Reason.BAD_TOPIC, "topic too long")
        head = self.prefix + "/" + TOPIC_VERSION + "/"
        if not topic.startswith(head):
            return Rejection(Reason.BAD_TOPIC, "topic outside the protocol prefix")
        rest = topic[len(head) :].split("/")
        if len(rest) != 3:
            return Rejection(Reason.BAD_TOPIC, "topic must be <school>/<device>/<channel>")
        school, device, channel = rest
        if not (IDENTITY_RE.match(school) and IDENTITY_RE.match(device)):
            return Rejection(Reason.INVALID_IDENTITY, "school or device level is not a legal identity")
        try:
            ch = Channel(channel)
        except ValueError:
            return Rejection(Reason.BAD_TOPIC, "unknown channel")
        return TopicRef(school, device, ch)


@dataclass(frozen=True, slots=True)
class TopicRef:
    school: str
    device: str
    channel: Channel
