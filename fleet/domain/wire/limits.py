"""Protocol v1's numbers: the version, size caps, identity patterns and field ranges."""

from __future__ import annotations

import re

PROTOCOL_VERSION = 1
# The topic segment that names the protocol version; a v2 would live beside it on the same broker.
TOPIC_VERSION = "v1"

# 4 KiB: a full telemetry message is ~200 bytes; anything near this is a bug or an attack, and the cap bounds
# the memory one queued message can hold (10,000 queued x 4 KiB = 40 MB worst case).
MAX_UPLINK_BYTES = 4096
# 16 KiB: a set_policy command with a 200-entry allowed-apps list fits with room to spare.
MAX_DOWNLINK_BYTES = 16384
# Topic names past this are refused before they are split (the longest legal topic is ~160 characters).
MAX_TOPIC_CHARS = 256
# Sequence numbers fit in a JSON number without precision loss (IEEE double integer range).
MAX_SEQ = 2**53 - 1
# Identity: device serials and school codes as they appear in topics. No MQTT wildcards (+ #), no level
# separator (/), no leading $ (reserved for broker topics), no whitespace or control characters.
IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# A device identity is also the device's MQTT username and client id, so on top of that it holds no ':':
# mosquitto's password file is `username:hash`, split at the first ':', and such a device could never log in.
DEVICE_IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CORRELATION_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# Short free-text fields (firmware version, app id, error code) are capped so one field cannot fill a row.
MAX_SHORT_TEXT = 128
# Codes and labels (firmware version, error code, ack reason) are shorter still: they end up in metric-free
# columns and reports, and 64 characters holds any semver with build metadata.
MAX_CODE_TEXT = 64
# Telemetry ranges: a reading outside them is a broken sensor or a forged message, refused as `schema`.
BATTERY_PCT_MIN, BATTERY_PCT_MAX = 0, 100
TEMPERATURE_C_MIN, TEMPERATURE_C_MAX = -40.0, 150.0  # the operating range of any board we ship, with margin
STORAGE_PCT_MIN, STORAGE_PCT_MAX = 0.0, 100.0
RSSI_DBM_MIN, RSSI_DBM_MAX = (
    -130,
    0,
)  # Wi-Fi RSSI: 0 dBm is the strongest possible, -130 below any noise floor
# Command lists and policies: bounded so a command fits MAX_DOWNLINK_BYTES.
MAX_ALLOWED_APPS = 200
# Screen-time policy bounds (set_policy, and the limits a screen_session reports): a session at most a school
# day's 8 hours, a daily limit at most the day, a break at most 2 hours.
SESSION_MINUTES_MAX = 480
DAILY_MINUTES_MAX = 1440
BREAK_MINUTES_MAX = 120
# A screen_session holds at most a day of use. It may be sent up to 7 days after it began: a session cut short
# by a shutdown is sent after the next boot, which a week's holiday may delay; older is a broken clock.
SCREEN_USE_S_MAX = 86_400
SCREEN_SESSION_MAX_AGE_MS = 7 * 86_400_000

# Timestamps: milliseconds since the Unix epoch, between 2020 and 2100; the clock of a terminal that lost its
# RTC reads 1970, which is refused rather than stored as a 56-year-old reading.
TS_MIN_MS = 1_577_836_800_000
TS_MAX_MS = 4_102_444_800_000
# Telemetry `up`/`down` are bytes since the previous message; 10 GB caps a single bogus value's damage to
# the roll-ups.
MAX_BYTES_DELTA = 10**10
