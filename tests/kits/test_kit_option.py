"""`labfleet provision --kit FAMILY=PORT`: a kit discovery cannot classify, named by the technician."""

from __future__ import annotations

import pytest

from drivers.types import Family
from fleet.cli.provision import parse_kit
from fleet.errors import InvalidInput


def test_a_kit_is_its_family_and_its_port() -> None:
    assert parse_kit("firmata=/dev/ttyUSB3") == (Family.FIRMATA, "/dev/ttyUSB3")
    assert parse_kit(" Robot = /dev/ttyACM0 ") == (Family.ROBOT, "/dev/ttyACM0")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("/dev/ttyUSB3", "give FAMILY=PORT"),
        ("firmata=", "give FAMILY=PORT"),
        ("arduino=/dev/ttyUSB3", "unknown family 'arduino' (one of micropython, firmata, robot)"),
    ],
)
def test_a_malformed_kit_is_refused_with_what_to_write(spec: str, says: str) -> None:
    with pytest.raises(InvalidInput, match="--kit") as err:
        parse_kit(spec)
    assert says in err.value.message
