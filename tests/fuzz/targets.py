"""The fuzz targets: every parser that reads bytes or text from outside, with the inputs that probe it and the
one property it must keep (it answers, or refuses with its own error; it never raises anything else).

`run(target, examples=..., seed=...)` drives one target with hypothesis, seeded, for a fixed number of
examples: the CI tests (tests/fuzz/test_fuzz.py) run each one bounded; benchmarks/soak_fuzz.py runs them all
for minutes with fresh seeds. The API's fuzzer is schemathesis (benchmarks/schemathesis_run.py), run by both.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from drivers.codecs import ihex
from drivers.codecs.firmata import FirmataDecoder
from drivers.codecs.robot import MAX_BODY, RobotDecoder, RobotFrame, encode_frame
from drivers.errors import FrameError
from fleet.domain import update_wire, wire
from fleet.errors import FleetError
from fleet.services import sheets
from fleet.services.import_files import read_table


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    # Examples per CI run: each target stays well under a minute on the 2-core CI machine.
    ci_examples: int


# --- MQTT payloads ------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = [
    "v",
    "seq",
    "ts",
    "battery",
    "temp_c",
    "storage_pct",
    "fw",
    "app",
    "up",
    "down",
    "rssi",
    "charging",
    "type",
    "code",
    "user",
    "id",
    "accepted",
    "ok",
    "reason",
    "detail",
    "state",
    "name",
    "args",
    "expires_at",
    "offset",
    "size",
    "version",
    "phase",
    "url",
    "sha256",
]
_near_valid = st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=10).map(lambda d: {"v": 1, **d})


def _payloads(limit: int) -> st.SearchStrategy[bytes]:
    """Garbage, near-valid objects, wrong top-level types, and oversized bodies."""
    return st.one_of(
        st.binary(max_size=300),
        _near_valid.map(lambda d: json.dumps(d).encode()),
        _json.map(lambda v: json.dumps(v).encode()),
        _near_valid.map(lambda d: json.dumps(d).encode() + b" " * limit),
        st.text(max_size=200).map(str.encode),
    )


def _check_uplink(example: tuple[wire.Channel, bytes]) -> None:
    got = wire.decode_uplink(*example)
    if isinstance(got, wire.Rejection):
        assert got.reason.value in wire.REASONS


def _check_update(payload: bytes) -> None:
    got = update_wire.decode_progress(payload)
    assert isinstance(got, update_wire.UpdateProgress | wire.Rejection)


def _check_downlink(payload: bytes) -> None:
    wire.decode_downlink(payload)  # a device's view of its cmd topic: any answer, never an exception


# --- serial codecs ------------------------------------------------------------------------------------------

_robot_stream = st.one_of(
    st.binary(max_size=2048),
    # valid frames with garbage around them and bytes flipped
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=64)).map(
            lambda t: encode_frame(RobotFrame(t[0], t[1], t[2]))
        ),
        max_size=6,
    ).map(b"".join),
)


def _check_robot(example: tuple[bytes, int, int]) -> None:
    data, step, flip = example
    if data and flip:
        i = flip % len(data)
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    dec = RobotDecoder()
    for i in range(0, len(data), step):
        for frame in dec.feed(data[i : i + step]):
            assert len(frame.body) <= MAX_BODY


def _check_firmata(example: tuple[bytes, bool, int]) -> None:
    data, from_device, step = example
    dec = FirmataDecoder(from_device=from_device)
    for i in range(0, len(data), step):
        dec.feed(data[i : i + step])


def _check_ihex(text: bytes) -> None:
    try:
        ihex.parse_ihex(text)
    except FrameError:
        pass


_ihex_text = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=300).map(ihex.encode_ihex),
    st.tuples(st.binary(min_size=1, max_size=200), st.integers(0, 10_000)).map(
        lambda t: _flip(ihex.encode_ihex(t[0]), t[1])
    ),
)


def _flip(data: bytes, at: int) -> bytes:
    i = at % len(data)
    return data[:i] + bytes([(data[i] + 1) % 256]) + data[i + 1 :]


# --- CSV and XLSX imports -----------------------------------------------------------------------------------

_cell_text = st.text(max_size=30) | st.sampled_from(
    ["=1+1", "@SUM(A1)", "2025/9/1", "2025年9月1日", "1,299.00", "¥329", "45900", "-", "\u200b", "\x00"]
)
_rows = st.lists(st.lists(_cell_text, max_size=12), max_size=8)
_csv_bytes = st.one_of(
    st.binary(max_size=600),
    st.tuples(_rows, st.sampled_from(["utf-8", "utf-8-sig", "gb18030"])).map(
        lambda t: "\n".join(",".join(json.dumps(c) if "," in c else c for c in r) for r in t[0]).encode(
            t[1], errors="replace"
        )
    ),
)


def _check_table(data: bytes) -> None:
    try:
        table = read_table(data)
    except FleetError:
        return  # refused with a message for the person who uploaded it
    assert isinstance(table.header, list)


# Text a person can type into a cell (a worksheet holds no control characters).
_xlsx_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)
_xlsx_cell = st.one_of(
    _xlsx_text,
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.dates(min_value=date(1900, 3, 1), max_value=date(2100, 1, 1)),
    st.none(),
)


def _xlsx(example: tuple[list[list[Any]], list[int]]) -> bytes:
    rows, flips = example
    header = [f"c{i}" for i in range(max((len(r) for r in rows), default=1))]
    data = sheets.xlsx_bytes([("Sheet1", header, rows)], widths=False)
    for at in flips:  # damage the zip: truncation, flipped bytes
        data = _flip(data, at)
    return data


_xlsx_bytes = st.tuples(
    st.lists(st.lists(_xlsx_cell, max_size=6), max_size=6), st.lists(st.integers(0, 1 << 20), max_size=2)
).map(_xlsx)


def _check_xlsx(data: bytes) -> None:
    _check_table(data)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "mqtt_uplink",
            st.tuples(st.sampled_from(list(wire.Channel)), _payloads(wire.MAX_UPLINK_BYTES)),
            _check_uplink,
            150,
        ),
        Target("mqtt_update", _payloads(wire.MAX_UPLINK_BYTES), _check_update, 100),
        Target("mqtt_downlink", _payloads(wire.MAX_DOWNLINK_BYTES), _check_downlink, 100),
        Target(
            "serial_robot",
            st.tuples(_robot_stream, st.integers(1, 64), st.integers(0, 4096)),
            _check_robot,
            300,
        ),
        Target(
            "serial_firmata",
            st.tuples(st.binary(max_size=2048), st.booleans(), st.integers(1, 64)),
            _check_firmata,
            300,
        ),
        Target("serial_ihex", _ihex_text, _check_ihex, 300),
        Target("csv_import", _csv_bytes, _check_table, 100),
        Target("xlsx_import", _xlsx_bytes, _check_xlsx, 30),
    )
}


class Counted:
    """Wraps a check to count the examples it ran (hypothesis also runs a few while shrinking a failure)."""

    def __init__(self, check: Callable[[Any], None]) -> None:
        self.check = check
        self.examples = 0

    def __call__(self, example: Any) -> None:
        self.examples += 1
        self.check(example)


def run(target: Target, *, examples: int, seed_: int, check: Callable[[Any], None] | None = None) -> None:
    """Run one target for `examples` examples from `seed_`; raises the (shrunk) failure, if any."""
    body = check or target.check

    @seed(seed_)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(target.strategy)
    def fuzz(example: Any) -> None:
        body(example)

    fuzz()


def new_seed(rng: random.Random) -> int:
    return rng.randrange(2**32)


__all__ = ["TARGETS", "Counted", "Target", "new_seed", "run"]
