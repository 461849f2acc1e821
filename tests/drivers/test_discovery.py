"""Port discovery: identity from USB descriptors, the kit table, and the hot-plug watcher."""

from __future__ import annotations

from drivers.discovery import PortEventKind, PortInfo, PortWatcher, classify, list_ports
from drivers.types import Family

UNO = PortInfo("/dev/ttyACM0", 0x2341, 0x0043, "75830333238351D0E1C1", "Arduino", "Uno", "1-1.1")
ROBOT = PortInfo("/dev/ttyUSB3", 0x1209, 0x000A, "EB000042", "LabFleet", "EduBot", "1-1.2")
CH340 = PortInfo("/dev/ttyUSB4", 0x1A86, 0x7523, None, "", "USB Serial", "1-1.3")
MOUSE_SERIAL = PortInfo("/dev/ttyS0")


def test_hardware_id_prefers_usb_serial_then_hub_port_then_path() -> None:
    assert UNO.hardware_id == "usb-2341-0043-75830333238351D0E1C1"
    assert CH340.hardware_id == "usbport-1a86-7523-1-1.3"
    assert MOUSE_SERIAL.hardware_id == "path:/dev/ttyS0"


def test_known_kit_table_classifies_families() -> None:
    assert classify(UNO).family == Family.FIRMATA
    assert classify(ROBOT).family == Family.ROBOT
    kit = classify(CH340)
    assert kit is not None and kit.family == Family.MICROPYTHON and not kit.certain
    assert classify(MOUSE_SERIAL) is None


class FakeLister:
    def __init__(self) -> None:
        self.ports: list[PortInfo] = []

    def __call__(self) -> list[PortInfo]:
        return list(self.ports)


async def test_watcher_reports_attach_detach_and_ignores_unknown_ports() -> None:
    lister = FakeLister()
    watcher = PortWatcher(lister)
    lister.ports = [UNO, MOUSE_SERIAL]
    events = await watcher.poll_once()
    assert [(e.kind, e.port.hardware_id) for e in events] == [(PortEventKind.ATTACHED, UNO.hardware_id)]
    assert await watcher.poll_once() == []
    lister.ports = [ROBOT]
    events = await watcher.poll_once()
    assert {(e.kind, e.port.hardware_id) for e in events} == {
        (PortEventKind.ATTACHED, ROBOT.hardware_id),
        (PortEventKind.DETACHED, UNO.hardware_id),
    }


async def test_device_replugged_on_new_path_keeps_its_identity() -> None:
    lister = FakeLister()
    watcher = PortWatcher(lister)
    lister.ports = [ROBOT]
    await watcher.poll_once()
    moved = PortInfo("/dev/ttyUSB5", 0x1209, 0x000A, "EB000042", "LabFleet", "EduBot", "1-1.4")
    lister.ports = [moved]
    events = await watcher.poll_once()
    assert [(e.kind, e.port.device) for e in events] == [(PortEventKind.MOVED, "/dev/ttyUSB5")]
    assert watcher.find(ROBOT.hardware_id) == moved


async def test_events_iterator_yields_plug_within_one_poll() -> None:
    lister = FakeLister()
    watcher = PortWatcher(lister, interval=0.01)
    lister.ports = [UNO]
    stream = watcher.events()
    first = await anext(stream)
    assert first.kind == PortEventKind.ATTACHED
    lister.ports = []
    second = await anext(stream)
    assert second.kind == PortEventKind.DETACHED
    await stream.aclose()


def test_real_lister_runs_on_this_machine() -> None:
    ports = list_ports()  # pyserial against the real sysfs; usually empty in CI
    assert all(isinstance(p, PortInfo) for p in ports)
