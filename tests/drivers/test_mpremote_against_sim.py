"""mpremote, MicroPython's own host tool, against the simulated MicroPython board over a real pty.

The simulator must behave like a board for the tool makers use, not only for LabFleet's driver: mpremote
sends its own Python (os.ilistdir, `with open()`, memoryview + readinto, vfs.mount) and types at the REPL.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulators.serial.micropython import MicroPythonSim
from simulators.serial.pty import SimRunner

MPREMOTE = [sys.executable, "-m", "mpremote"]
# One mpremote run connects, enters the raw REPL and runs a few commands: seconds on a loaded CI machine.
RUN_TIMEOUT = 60.0
BIG = random.Random(18).randbytes(20 * 1024)


@pytest.fixture
async def board() -> AsyncIterator[SimRunner]:
    sim = MicroPythonSim(
        unique_id=bytes.fromhex("30aea4c0ffee"),
        files={"/boot.py": b"# boot.py\n", "/main.py": b"print('hello from main')\n"},
    )
    run = SimRunner(sim, name="mpy-mpremote")
    await run.plug()
    yield run
    await run.aclose()


def sim_of(run: SimRunner) -> MicroPythonSim:
    assert isinstance(run.device, MicroPythonSim)
    return run.device


async def mpremote(run: SimRunner, *args: str, cwd: Path | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *MPREMOTE,
        "connect",
        run.path,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"mpremote {' '.join(args)} exited {proc.returncode}:\n{text}"
    return text


async def test_exec_and_eval(board: SimRunner) -> None:
    out = await mpremote(board, "exec", "import os; print(os.uname().sysname, 6 * 7)", "+", "eval", "1 << 14")
    assert out.splitlines() == ["esp32 42", "16384"]


async def test_fs_ls_cat_and_df(board: SimRunner) -> None:
    out = await mpremote(board, "fs", "ls", "+", "fs", "cat", ":main.py", "+", "df")
    lines = out.splitlines()
    assert "ls :" in lines
    assert any(line.split() == ["10", "boot.py"] for line in lines)
    assert any(line.split() == ["25", "main.py"] for line in lines)
    assert "print('hello from main')" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("filesystem"))
    fs, size, used, avail, _pct, mount = lines[header + 1].split()
    assert (fs, mount) == ("<VfsLfs2>", "/") and int(size) == int(used) + int(avail) and int(used) > 0


async def test_fs_cp_both_ways_with_a_20kb_file_and_sha256sum(board: SimRunner, tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(BIG)
    out = await mpremote(
        board,
        "fs", "cp", "big.bin", ":big.bin",
        "+", "fs", "sha256sum", ":big.bin",
        "+", "fs", "cp", ":big.bin", "back.bin",
        "+", "fs", "ls",
        cwd=tmp_path,
    )  # fmt: skip
    assert sim_of(board).files["/big.bin"] == BIG
    assert (tmp_path / "back.bin").read_bytes() == BIG
    assert hashlib.sha256(BIG).hexdigest() in out.split()
    assert any(line.split() == [str(len(BIG)), "big.bin"] for line in out.splitlines())


async def test_fs_cat_of_a_missing_file_is_the_tools_enoent(board: SimRunner) -> None:
    proc = await asyncio.create_subprocess_exec(
        *MPREMOTE, "connect", board.path, "fs", "cat", ":nope.py",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    assert proc.returncode == 1 and b"nope.py: No such file or directory" in out


async def test_repl_echoes_typed_input_and_prints_values(board: SimRunner) -> None:
    console, tool_side = os.openpty()  # mpremote's repl wants a terminal: we are its keyboard and screen
    proc = await asyncio.create_subprocess_exec(
        *MPREMOTE, "connect", board.path, "repl", stdin=tool_side, stdout=tool_side, stderr=tool_side
    )
    os.close(tool_side)
    os.set_blocking(console, False)
    seen = bytearray()

    async def until(marker: bytes) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUN_TIMEOUT
        while marker not in seen:
            assert loop.time() < deadline, f"never saw {marker!r} in {bytes(seen)!r}"
            try:
                seen.extend(os.read(console, 4096))
            except BlockingIOError:
                await asyncio.sleep(0.02)

    try:
        await until(b"Ctrl-x to exit")
        os.write(console, b"\r")
        await until(b">>> ")
        for line in (b"x = 6 * 7\r", b"x + 1\r", b"for i in range(3):\r", b"print(i * x)\r", b"\r"):
            for byte in line:  # typed, one key at a time
                os.write(console, bytes([byte]))
                await asyncio.sleep(0.005)
        await until(b"84\r\n>>> ")
        os.write(console, b"\x1d")  # Ctrl-]: leave the repl
        assert await asyncio.wait_for(proc.wait(), RUN_TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(console)
    text = bytes(seen).decode(errors="replace")
    assert ">>> x = 6 * 7\r\n>>> x + 1\r\n43\r\n" in text
    # The REPL indents the loop's body itself, as MicroPython's does; Enter on the bare indent ends it.
    assert ">>> for i in range(3):\r\n...     print(i * x)\r\n...     \r\n0\r\n42\r\n84\r\n>>> " in text
    assert sim_of(board).interp.globals["x"] == 42
