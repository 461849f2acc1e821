"""Privacy rules the inspection checks: what a stored pseudonym looks like, what a student identifier looks
like, and a fingerprint that names the pseudonym key without revealing it.

The fleet stores devices, not students: a login reference is replaced by a keyed pseudonym at the ingest seam
(`device_state.pseudonym`). These rules let an inspector check that nothing else slipped in: a stored
"pseudonym" that is not one, or a national identifier typed into a free-text field.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date
from enum import StrEnum

# What fleet.domain.device_state.pseudonym produces: 128 bits of HMAC-SHA256, lowercase hex.
_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
# The label the key fingerprint is the HMAC of: fixed, so the same key always has the same fingerprint.
_FINGERPRINT_LABEL = b"labfleet/pseudonym-key-fingerprint/v1"
# A mainland resident identity number (GB 11643-1999): 6-digit area, 8-digit birth date, 3-digit sequence,
# a check character; with a leading G, J or L it is the national student number (全国学籍号). Not part of a
# longer run of letters or digits, so order numbers and hashes do not match by accident.
_RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])([GJLgjl]?)(\d{17}[0-9Xx])(?![0-9A-Za-z])")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


class Finding(StrEnum):
    """Why a stored value is flagged."""

    RESIDENT_ID = "resident_id"  # a resident identity number
    STUDENT_NUMBER = "student_number"  # a national student number (G/J/L + resident identity number)
    LOGIN_REFERENCE = "login_reference"  # a login `user` kept in a dead letter's payload
    NOT_A_PSEUDONYM = "not_a_pseudonym"  # a session pseudonym column holding something else


def is_pseudonym(value: str) -> bool:
    return bool(_PSEUDONYM.match(value))


def key_fingerprint(key: str) -> str:
    """Names a pseudonym key (to tell when it changed) without revealing it: HMAC-SHA256 of a fixed label."""
    return hmac.new(key.encode(), _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def resident_id_valid(number: str) -> bool:
    """An 18-character resident identity number with a real birth date and a correct check character."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if not 1900 <= born.year <= 2100:
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _WEIGHTS, strict=True))
    return _CHECK[total % 11] == number[17].upper()


def identifiers_in(text: str) -> set[Finding]:
    """The kinds of student identifier found in free text (empty when none)."""
    found: set[Finding] = set()
    if len(text) < 18:
        return found
    for m in _RESIDENT_ID.finditer(text):
        if resident_id_valid(m[2]):
            found.add(Finding.STUDENT_NUMBER if m[1] else Finding.RESIDENT_ID)
    return found
