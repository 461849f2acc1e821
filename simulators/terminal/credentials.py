"""The terminal's side of credential rotation (docs/protocol-mqtt.md 8.1), as a vendor would build it.

On a `rotate_credentials` command the terminal keeps the new password beside the one it has (in secure
storage on a real terminal), then acknowledges. From then on it connects with the new password first and falls
back to the previous one only when the new one is refused; once the new one has been accepted, the
previous one is forgotten. A repeated command (same id, redelivered after a reconnect) is acknowledged again
and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.domain import wire


@dataclass
class CredentialStore:
    """A terminal's broker password(s)."""

    password: str
    previous: str | None = None  # kept until the new password has opened a session
    handled: set[str] = field(default_factory=set)  # rotate command ids already carried out
    confirmed: str | None = None  # the id whose result is still owed: sent after the next good connect

    def on_rotate(self, cmd: wire.Command, now_ms: int) -> wire.Ack:
        """Carry out a `rotate_credentials` command; returns the ack to publish."""
        if cmd.id in self.handled:
            return wire.Ack(cmd.id, now_ms, True)
        if cmd.expires_at_ms < now_ms:
            return wire.Ack(cmd.id, now_ms, False, "expired")
        try:
            new, _grace_until = wire.parse_rotation(cmd.args)
        except ValueError:
            return wire.Ack(cmd.id, now_ms, False, "bad_args")
        # Stored before the ack: once the service has the ack, the old password may stop at any moment.
        self.previous, self.password = self.password, new
        self.handled.add(cmd.id)
        self.confirmed = cmd.id
        return wire.Ack(cmd.id, now_ms, True)

    def candidates(self) -> list[str]:
        """Passwords to try, in order."""
        return [self.password] + ([self.previous] if self.previous else [])

    def connected_with(self, password: str, now_ms: int) -> wire.Result | None:
        """A session opened with `password`: forget the previous one once the new one works, and return the
        result owed for the rotation (ok: the new password is in use)."""
        if password != self.password:
            return None
        self.previous = None
        owed, self.confirmed = self.confirmed, None
        return wire.Result(owed, now_ms, True) if owed else None
