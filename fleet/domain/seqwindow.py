"""Per-device sequence windows: tell a new message from a redelivered or stale one, in any arrival order."""

from __future__ import annotations

# 62 bits below the highest seq: the mask fits a signed BIGINT on every database. Shared-subscription
# workers reorder a device's messages by at most a batch or two, far inside this window.
WINDOW = 62
_MASK = (1 << WINDOW) - 1


def accept(last: int, mask: int, seq: int) -> tuple[bool, int, int]:
    """(is_new, last', mask') after seeing `seq`; bit i of mask = seq `last-1-i` already seen."""
    if seq > last:
        d = seq - last
        if last == 0:
            return True, seq, 0
        if d > WINDOW:
            return True, seq, 0
        return True, seq, ((mask << d) | (1 << (d - 1))) & _MASK
    if seq == last:
        return False, last, mask
    i = last - 1 - seq
    if i >= WINDOW or (mask >> i) & 1:
        return False, last, mask  # older than the window counts as already seen: never double-count
    return True, last, mask | (1 << i)
