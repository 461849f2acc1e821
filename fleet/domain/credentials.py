"""Secrets for devices and claim tokens: generation, hashing (mosquitto's PBKDF2 format) and checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# One PBKDF2 round (mosquitto_passwd uses 101). Device passwords are 256-bit random strings, so stretching
# adds nothing against guessing (as for claim tokens, below), while mosquitto pays the count on every CONNECT
# and, on each credential reload, for every connected client: with 10,000 terminals online a reload costs ~1 s
# of broker time at 101 rounds and ~0.07 s at 1. Stored hashes keep their own count, so older ones still
# verify.
PBKDF2_ITERATIONS = 1
SALT_BYTES = 12
CLAIM_PREFIX = "ct_"


def new_password() -> str:
    """A device password: 256 bits, URL-safe, no characters that need quoting in a password file."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """mosquitto_passwd's "$7$" format: PBKDF2-HMAC-SHA512, base64 salt and digest."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, kind, iterations, salt_b64, digest_b64 = stored.split("$")
        if kind != "7":
            return False
        digest = base64.b64decode(digest_b64)
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt_b64), int(iterations), len(digest)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, digest)


def new_claim_token() -> tuple[str, str, str]:
    """(token shown once, public prefix, secret hash). Format: ct_<prefix>_<secret>."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    return f"{CLAIM_PREFIX}{prefix}_{secret}", prefix, sha256(secret)


def split_claim_token(token: str) -> tuple[str, str] | None:
    if not isinstance(token, str) or not token.startswith(CLAIM_PREFIX) or len(token) > 128:
        return None
    prefix, sep, secret = token[len(CLAIM_PREFIX) :].partition("_")
    if not sep or not prefix or not secret:
        return None
    return prefix, secret


def sha256(secret: str) -> str:
    # Claim-token secrets are 192-bit random: a fast hash is enough, and a stolen table reveals nothing.
    return hashlib.sha256(secret.encode()).hexdigest()


def check_secret(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(sha256(secret), stored_hash)


# The label of a claim token an edge agent issues to enroll one kit it bridges: this prefix, then the kit's
# port id. The fleet knows an agent only through these tokens (fleet/services/edge_agents.py).
EDGE_AGENT_LABEL = "edge agent: "
