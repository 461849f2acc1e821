"""Checking a decoded payload field by field: the primitives every decoder of the package shares.

Internal to fleet.domain.wire (hence the underscores): a failed check raises `_Bad`, which the decoders turn
into a `Rejection` with reason `schema` at their boundary.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import orjson

from fleet.domain.wire.limits import CORRELATION_RE, MAX_SHORT_TEXT, PROTOCOL_VERSION
from fleet.domain.wire.refusals import Reason, Rejection


class _Bad(Exception):
    """Internal: a schema violation with its field; becomes a Rejection at the decoder boundary."""


@overload
def _int(obj: dict[str, Any], key: str, lo: int, hi: int, *, required: Literal[True] = ...) -> int: ...
@overload
def _int(obj: dict[str, Any], key: str, lo: int, hi: int, *, required: bool) -> int | None: ...
def _int(obj: dict[str, Any], key: str, lo: int, hi: int, *, required: bool = True) -> int | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise _Bad(f"{key} is required")
        return None
    # bool is an int subclass in Python; JSON true must not pass as 1.
    if type(v) is not int or not lo <= v <= hi:
        raise _Bad(f"{key} must be an integer in [{lo}, {hi}]")
    return v


def _num(obj: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if type(v) not in (int, float) or not lo <= v <= hi:  # NaN fails the range check too
        raise _Bad(f"{key} must be a number in [{lo}, {hi}]")
    return float(v)


def _text(
    obj: dict[str, Any], key: str, *, required: bool = False, max_len: int = MAX_SHORT_TEXT
) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise _Bad(f"{key} is required")
        return None
    if type(v) is not str or not 0 < len(v) <= max_len or not v.isprintable():
        raise _Bad(f"{key} must be printable text of 1..{max_len} characters")
    return v


@overload
def _bool(obj: dict[str, Any], key: str, *, required: Literal[True]) -> bool: ...
@overload
def _bool(obj: dict[str, Any], key: str, *, required: bool = ...) -> bool | None: ...
def _bool(obj: dict[str, Any], key: str, *, required: bool = False) -> bool | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise _Bad(f"{key} is required")
        return None
    if type(v) is not bool:
        raise _Bad(f"{key} must be true or false")
    return v


def _load(payload: bytes, max_bytes: int) -> dict[str, Any] | Rejection:
    if len(payload) > max_bytes:
        return Rejection(Reason.OVERSIZED, f"{len(payload)} bytes > {max_bytes}")
    try:
        # orjson accepts strict RFC 8259 JSON in UTF-8 only: invalid UTF-8, NaN/Infinity and nesting deeper
        # than 1,024 levels all raise its JSONDecodeError (a ValueError).
        obj = orjson.loads(payload)
    except ValueError:
        return Rejection(Reason.MALFORMED_JSON, "payload is not UTF-8 JSON")
    if type(obj) is not dict:
        return Rejection(Reason.SCHEMA, "payload must be a JSON object")
    if obj.get("v") != PROTOCOL_VERSION or type(obj.get("v")) is not int:
        return Rejection(Reason.UNSUPPORTED_VERSION, "v must be 1")
    return obj


def _correlation(o: dict[str, Any]) -> str:
    v = o.get("id")
    if type(v) is not str or not CORRELATION_RE.match(v):
        raise _Bad("id must be the command's correlation id")
    return v
