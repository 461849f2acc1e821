"""MicroPython driver against the simulated board over real ptys: raw REPL, raw paste, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from drivers.codecs.repl import parse_literal
from drivers.errors import FrameError, LinkClosed
from drivers.micropython import APP_MANIFEST, CONFIG_PATH, MicroPythonBoard
from drivers.types import FirmwareImage, HealthStatus
from simulators.serial.faults import FaultPlan, FaultyLink
from simulators.serial.micropython import MicroPythonSim
from simulators.serial.minipython import BoardState, MiniPython
from simulators.serial.pty import SimRunner

UID = bytes.fromhex("30aea4c0ffee")
BUNDLE = FirmwareImage.bundle(
    "1.4.0",
    {
        "main.py": b"import app\napp.run()\n",
        "lib/app.py": b"def run():\n    print('lesson kit ready')\n" * 40,
    },
)


@pytest.fixture(params=[True, False], ids=["raw-paste", "raw-repl-fallback"])
async def runner(request: pytest.FixtureRequest) -> AsyncIterator[SimRunner]:
    run = SimRunner(MicroPythonSim(unique_id=UID, raw_paste=request.param), name="mpy-sim")
    await run.plug()
    yield run
    await run.aclose()


def sim_of(run: SimRunner) -> MicroPythonSim:
    assert isinstance(run.device, MicroPythonSim)
    return run.device


async def test_identify_reads_unique_id_uname_and_implementation(runner: SimRunner) -> None:
    async with await MicroPythonBoard.open(runner.url) as board:
        ident = await board.identify()
        paste = board.use_raw_paste
    assert ident.hardware_id == "mpy-30aea4c0ffee"
    assert ident.model == "Generic ESP32 module with ESP32"
    assert ident.detail("micropython") == "1.23.0" and ident.detail("implementation") == "micropython"
    assert ident.firmware_version == "none"
    assert paste is sim_of(runner).raw_paste  # raw paste used exactly when the board offers it


async def test_health_reports_heap_and_flags_low_memory(runner: SimRunner) -> None:
    async with await MicroPythonBoard.open(runner.url) as board:
        ok = await board.read_health()
        sim_of(runner).board.mem_used = 105_000
        low = await board.read_health()
    assert ok.status == HealthStatus.OK and ok.reading("heap_free_bytes") == 92_000
    assert low.status == HealthStatus.FAULT and "heap nearly exhausted" in low.problems


async def test_config_is_written_as_a_json_file_on_the_board(runner: SimRunner) -> None:
    async with await MicroPythonBoard.open(runner.url) as board:
        result = await board.apply_config({"school": "S-3", "mqtt_host": "edge.local"})
        back = await board.read_config()
    assert result.ok
    assert json.loads(sim_of(runner).board.files[CONFIG_PATH]) == {"school": "S-3", "mqtt_host": "edge.local"}
    assert back == {"school": "S-3", "mqtt_host": "edge.local"}
    assert f"{CONFIG_PATH}.part" not in sim_of(runner).board.files


async def test_flash_writes_bundle_files_verified_then_reboots(runner: SimRunner) -> None:
    sim = sim_of(runner)
    async with await MicroPythonBoard.open(runner.url) as board:
        result = await board.flash(BUNDLE)
        ident = await board.identify()
    assert result.ok and (result.before, result.after) == ("none", "1.4.0")
    assert sim.board.files["/main.py"] == dict(BUNDLE.files)["main.py"]
    assert sim.board.files["/lib/app.py"] == dict(BUNDLE.files)["lib/app.py"]
    assert json.loads(sim.board.files[APP_MANIFEST])["version"] == "1.4.0"
    assert sim.soft_resets == 1 and ident.firmware_version == "1.4.0"


async def test_reboot_is_a_soft_reset_back_into_raw_repl(runner: SimRunner) -> None:
    async with await MicroPythonBoard.open(runner.url) as board:
        await board.run("x = 5\n")
        await board.reboot()
        after = await board.exec("print(x)\n")
    assert sim_of(runner).soft_resets == 1
    assert after.error_line().startswith("NameError")  # the interpreter state was reset


async def test_board_exception_becomes_device_error_with_its_last_line(runner: SimRunner) -> None:
    from drivers.errors import DeviceError

    async with await MicroPythonBoard.open(runner.url) as board:
        with pytest.raises(DeviceError, match="OSError: \\[Errno 2\\] ENOENT"):
            await board.run("open('/missing.txt')\n")
        assert (await board.run("print(1 + 1)\n")).strip() == b"2"  # the session is still usable


async def test_unplug_mid_flash_then_replug_resumes_partial_file() -> None:
    big = FirmwareImage.bundle("2.0.0", {"main.py": bytes(range(256)) * 24})
    sim = MicroPythonSim(unique_id=UID)
    run = SimRunner(sim, faults=FaultPlan(unplug_after_rx_bytes=9_000), name="mpy-unplug")
    await run.plug()
    try:
        board = await MicroPythonBoard.open(run.url)
        with pytest.raises(LinkClosed):
            await board.flash(big)
        await board.aclose()
        partial = len(sim.board.files.get("/main.py.part", b""))
        assert 0 < partial < 6144
        await run.plug()
        board = await MicroPythonBoard.open(run.url)
        result = await board.flash(big)
        await board.aclose()
    finally:
        await run.aclose()
    assert result.ok and result.resumed_from == partial
    assert result.bytes_sent == 6144 - partial
    assert sim.board.files["/main.py"] == bytes(range(256)) * 24


async def test_corrupting_flash_fails_the_update_and_keeps_the_old_app(runner: SimRunner) -> None:
    sim = sim_of(runner)
    async with await MicroPythonBoard.open(runner.url) as board:
        assert (await board.flash(BUNDLE)).ok
        sim.board.corrupt_writes = True
        result = await board.flash(FirmwareImage.bundle("1.5.0", {"main.py": b"print('new')\n"}))
        ident = await board.identify()
    assert not result.ok and "sha256" in result.reason
    assert ident.firmware_version == "1.4.0"
    assert sim.board.files["/main.py"] == dict(BUNDLE.files)["main.py"]


def test_literal_parser_refuses_code() -> None:
    with pytest.raises(FrameError):
        parse_literal(b"__import__('os').system('true')")
    assert parse_literal(b"('a', (1, 2))\r\n") == ("a", (1, 2))


def test_simulator_interpreter_refuses_dunders_and_runaway_loops() -> None:
    interp = MiniPython(BoardState(unique_id=b"\x01"))
    assert "AttributeError" in interp.run("().__class__\n")[1]
    assert "RuntimeError" in interp.run("while True:\n    pass\n")[1]
    assert "ImportError" in interp.run("import subprocess\n")[1]
    assert "MemoryError" in interp.run("x = b'a' * 100000000\n")[1]


async def test_slow_board_still_identifies_and_takes_config() -> None:
    sim = MicroPythonSim(unique_id=UID)
    run = SimRunner(sim, faults=FaultPlan(delay=0.003, baud=115200), name="mpy-slow")
    await run.plug()
    try:
        async with await MicroPythonBoard.open(run.url) as board:
            ident = await board.identify()
            result = await board.apply_config({"school": "S-8"})
    finally:
        await run.aclose()
    assert ident.hardware_id == "mpy-30aea4c0ffee" and result.ok
    assert json.loads(sim.board.files[CONFIG_PATH]) == {"school": "S-8"}


NOISY_BUNDLE = FirmwareImage.bundle(
    "1.6.0",
    {
        "main.py": b"import app\napp.run()\n",
        "lib/app.py": b"def run():\n    print('noisy lab, steady kit')\n" * 12,
    },
)


@pytest.mark.parametrize("raw_paste", [True, False], ids=["raw-paste", "raw-repl-fallback"])
async def test_one_percent_byte_errors_never_run_damaged_code_and_the_flash_completes(
    raw_paste: bool,
) -> None:
    sim = MicroPythonSim(unique_id=UID, raw_paste=raw_paste)
    plan = FaultPlan(byte_error_rate=0.01, seed=4321)  # seeds 1-11 pass too (checked by hand)
    run = SimRunner(sim, faults=plan, name="mpy-noisy")
    await run.plug()
    journal: list[tuple[bytes, bytes | None]] = []
    try:
        board = await MicroPythonBoard.open(
            run.url, journal=journal, ack_timeout=0.1, enter_timeout=0.3, reboot_timeout=0.5
        )
        try:
            ident = await board.identify()
            config = await board.apply_config({"school": "S-9", "mqtt_host": "edge.local"})
            result = await board.flash(NOISY_BUNDLE)
            health = await board.read_health()
            failures = board.failures
            assert isinstance(run.link, FaultyLink)
            damaged = run.link.corrupted
        finally:
            await board.aclose()
    finally:
        await run.aclose()
    assert ident.hardware_id == "mpy-30aea4c0ffee"
    assert config.ok and json.loads(sim.board.files[CONFIG_PATH]) == {
        "school": "S-9",
        "mqtt_host": "edge.local",
    }
    assert result.ok and result.after == "1.6.0"
    for path, blob in NOISY_BUNDLE.files:
        assert sim.board.files["/" + path] == blob
    assert health.reading("heap_free_bytes") > 0
    # What ran is only ever code the driver sent through its checked helper, byte for byte, with the
    # data operand it was sent with; nothing on the board changed outside that helper.
    intended = set(journal)
    for code, data in sim.interp.exec_log:
        assert (code, data) in intended or (code, None) in intended, (code[:60], data[:20])
    assert sim.board.mutations and all(inside for _, _, inside in sim.board.mutations)
    # The noise was real: the line damaged bytes and submissions had to be repeated.
    assert damaged > 50 and failures > 10
