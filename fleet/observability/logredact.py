"""Logs without credentials or device identities.

- The HTTP access log: a signed firmware link's `sig` is the only credential for that download, and an access
  log that keeps full query strings hands it to whoever reads it. uvicorn's access logger gets a filter that
  rewrites secret query values before any handler formats the line.
- The embedded broker's log (amqtt): its warnings name clients by id, and a device's client id is its
  serial. Below DEBUG they are replaced by `<client>`; at DEBUG (set deliberately) they stay, for debugging.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

# Query parameters whose values are credentials (compared case-insensitively, after percent-decoding).
SECRET_PARAMS = frozenset({"sig", "signature", "token", "access_token", "claim_token", "password", "secret"})
REDACTED = "REDACTED"


def redact_query(target: str) -> str:
    """`/path?sig=abc&x=1` -> `/path?sig=REDACTED&x=1`; anything without a query is returned as is."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for pair in query.split("&"):
        name, eq, _value = pair.partition("=")
        if eq and unquote_plus(name).strip().lower() in SECRET_PARAMS:
            parts.append(f"{name}={REDACTED}")
        else:
            parts.append(pair)
    return f"{path}?{'&'.join(parts)}"


class RedactSecrets(logging.Filter):
    """Redact secret query values in a log record's string arguments (uvicorn passes the path as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_query(a) if isinstance(a, str) and "?" in a else a for a in record.args
            )
        elif isinstance(record.msg, str) and "?" in record.msg and not record.args:
            record.msg = redact_query(record.msg)
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging config with the redacting filter on its access logger."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_secrets"] = {"()": f"{__name__}.RedactSecrets"}
    config["loggers"]["uvicorn.access"]["filters"] = ["redact_secrets"]
    config["handlers"]["access"]["filters"] = ["redact_secrets"]
    return config


# amqtt's messages at WARNING and above that name a client (0.12: broker.py, mqtt/protocol/handler.py).
_CLIENT_IN_BROKER_LOG = (
    re.compile(r"(?P<pre>\bClient )(?P<id>\S+)(?P<post> is )"),
    re.compile(r"^(?P<pre>)(?P<id>\S+)(?P<post> Unhandled packet type)"),
    re.compile(r"^(?P<pre>)(?P<id>\S+)(?P<post> not allowed to )"),
)
HIDDEN_CLIENT = "<client>"


class HideClientIds(logging.Filter):
    """On a handler: hide client ids (device serials) in the broker's records unless its logger is at DEBUG.

    On a handler rather than on amqtt's loggers: a logger's filter sees only records logged on that very
    logger, and amqtt creates its loggers lazily, one per module."""

    def __init__(self, family: str = "amqtt") -> None:
        super().__init__()
        self.family = family

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == self.family or record.name.startswith(self.family + ".")):
            return True
        if logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG:
            return True
        message = record.getMessage()
        hidden = message
        for pattern in _CLIENT_IN_BROKER_LOG:
            hidden = pattern.sub(lambda m: f"{m['pre']}{HIDDEN_CLIENT}{m['post']}", hidden)
        if hidden != message:
            record.msg, record.args = hidden, ()
        return True
