"""The MicroPython helper (drivers/onboard/mpy_helper.py) run on CPython with fakes for the board's modules:
once imported from the file, once as the driver sends it (squeezed); then the squeezed parts on the
simulated board."""

from __future__ import annotations

import ast
import base64
import builtins
import hashlib
import importlib.util
import os
import sys
import time
import zlib
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest

import drivers.onboard
from drivers import mpy_checked
from drivers.mpy_helper_code import helper_parts, helper_source, split_parts, squeeze, stripped
from simulators.serial.minipython import BoardState, MiniPython

HELPER_FILE = Path(drivers.onboard.__file__).parent / "mpy_helper.py"
PARTS = helper_parts()
UID = bytes.fromhex("30aea4c0ffee")
UName = namedtuple("UName", "sysname nodename release version machine")


class FakeOs:
    """The board's `os` over a directory: board paths ('/lf_app.json') map into `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def listdir(self, d: str) -> list[str]:
        return os.listdir(self.path(d))

    def stat(self, p: str) -> os.stat_result:
        return os.stat(self.path(p))

    def mkdir(self, p: str) -> None:
        os.mkdir(self.path(p))

    def remove(self, p: str) -> None:
        os.remove(self.path(p))

    def rename(self, a: str, b: str) -> None:
        os.rename(self.path(a), self.path(b))

    def statvfs(self, p: str) -> tuple[int, ...]:
        return (4096, 4096, 512, 300, 300, 0, 0, 0, 0, 255)  # bsize, frsize, blocks, bfree, ...

    def uname(self) -> UName:
        return UName("esp32", "esp32", "1.23.0", "v1.23.0 on 2024-06-02", "Generic ESP32 module with ESP32")


class Board:
    """The helper's globals (as the board holds them) and the directory standing for its filesystem."""

    def __init__(self, g: dict[str, Any], root: Path) -> None:
        self.g = g
        self.root = root

    def __getattr__(self, name: str) -> Any:
        return self.g[name]

    def file(self, p: str) -> bytes:
        return (self.root / p.lstrip("/")).read_bytes()

    def put(self, p: str, data: bytes) -> None:
        (self.root / p.lstrip("/")).write_bytes(data)


def _load_from_file() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("mpy_helper_under_test", HELPER_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)


def _load_as_sent() -> dict[str, Any]:
    g: dict[str, Any] = {"__name__": "board"}
    for part in ("stub", "q", "lib"):
        exec(compile(PARTS[part], f"<{part}>", "exec"), g)  # noqa: S102 - runs the helper as the board would
    return g


@pytest.fixture(params=["file", "sent"])
def board(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Board:
    monkeypatch.setitem(
        sys.modules, "machine", SimpleNamespace(unique_id=lambda: UID, freq=lambda: 160_000_000)
    )
    monkeypatch.setattr(time, "ticks_ms", lambda: 4321, raising=False)  # H imports time when it runs
    g = _load_from_file() if request.param == "file" else _load_as_sent()
    fake_os = FakeOs(tmp_path)

    def fake_open(p: str, mode: str = "r") -> IO[Any]:
        return builtins.open(fake_os.path(p), mode)

    g.update(
        os=fake_os,
        open=fake_open,
        gc=SimpleNamespace(collect=lambda: None, mem_free=lambda: 92_000, mem_alloc=lambda: 18_000),
        sys=SimpleNamespace(implementation=SimpleNamespace(name="micropython", version=(1, 23, 0))),
    )
    return Board(g, tmp_path)


def _g_call(board: Board, nonce: int, code: bytes, data: bytes = b"", *, crc: int | None = None) -> None:
    """What the host submits: G(nonce, crc32(code + data), code_b64, data_b64)."""
    b64 = base64.b64encode
    board.G(nonce, zlib.crc32(code + data) if crc is None else crc, b64(code).decode(), b64(data).decode())


def test_g_runs_checked_code_with_its_data_and_answers_in_a_checked_line(
    board: Board, capsys: pytest.CaptureFixture[str]
) -> None:
    _g_call(board, 7, b"R=D[::-1]", b"abc")
    out = capsys.readouterr().out.encode()
    assert mpy_checked._reply_for(out, 7) == (0, b"cba")
    assert mpy_checked._reply_for(out, 8) is None  # the reply names its call
    assert mpy_checked._reply_for(out.replace(b"cba", b"cbb"), 7) is None  # a damaged reply is recognised


def test_g_runs_nothing_when_the_crc_does_not_match(board: Board, capsys: pytest.CaptureFixture[str]) -> None:
    _g_call(board, 3, b"W=1", crc=zlib.crc32(b"W=2"))
    assert mpy_checked._reply_for(capsys.readouterr().out.encode(), 3) == (None, None)
    assert "W" not in board.g


def test_g_reports_what_the_code_raised(board: Board, capsys: pytest.CaptureFixture[str]) -> None:
    _g_call(board, 4, b"R=5\nR=1//0")
    status, value = mpy_checked._reply_for(capsys.readouterr().out.encode(), 4) or ("", "")
    assert str(status).startswith("ZeroDivisionError") and value == 5


def test_q_appends_only_at_the_offset_the_host_names(board: Board) -> None:
    board.g.pop("U", None)
    board.g["D"] = b"ab"
    assert board.Q(3) == 0  # nothing uploaded yet (U undefined, as after a reset)
    assert board.Q(0) == 2
    board.g["D"] = b"cd"
    assert board.Q(2) == 4
    assert board.Q(2) == 4  # the same piece again (its reply was lost): not appended twice
    assert board.Q(9) == 4
    assert board.g["U"] == b"abcd"
    board.g["D"] = b"x"
    assert board.Q(0) == 1 and board.g["U"] == b"x"  # offset 0 starts over


def test_identity_reads_the_unique_id_uname_implementation_and_app_version(board: Board) -> None:
    model = "Generic ESP32 module with ESP32"
    assert board.I() == (UID.hex(), "esp32", "1.23.0", model, "micropython", (1, 23, 0), "")
    board.put("/lf_app.json", b'{"version": "1.4.0", "files": {}}')
    assert board.I()[-1] == "1.4.0"


def test_health_reports_heap_filesystem_clock_and_uptime(board: Board) -> None:
    assert board.H() == (92_000, 18_000, 4096 * 300, 4096 * 512, 160_000_000, 4321)


def test_listing_says_whether_a_name_is_in_a_folder(board: Board) -> None:
    assert board.E("/", "x.py") is False
    board.put("/x.py", b"")
    assert board.E("/", "x.py") is True
    assert board.E("/missing", "x.py") is False  # a missing folder is not an error


def test_hash_is_size_and_sha256_across_read_chunks_or_minus_one(board: Board) -> None:
    data = bytes(range(256)) * 3 + b"tail"  # more than one 256-byte read
    board.put("/app.py", data)
    assert board.S("/", "app.py", "/app.py") == (len(data), hashlib.sha256(data).hexdigest())
    board.put("/empty.py", b"")
    assert board.S("/", "empty.py", "/empty.py") == (0, hashlib.sha256(b"").hexdigest())
    assert board.S("/", "none.py", "/none.py") == (-1, "")


def test_writes_land_only_at_the_offset_the_host_names(board: Board) -> None:
    board.g["D"] = b"hello "
    assert board.A("/f.part", 0) == 6
    board.g["D"] = b"world"
    assert board.A("/f.part", 6) == 11
    assert board.A("/f.part", 6) == 11  # repeated (its reply was lost): not appended twice
    assert board.A("/f.part", 3) == 11  # a stale offset writes nothing
    assert board.file("/f.part") == b"hello world"
    assert board.A("/gone.part", 5) == -1  # no file to resume: the host starts over at 0
    board.g["D"] = b"new"
    assert board.A("/f.part", 0) == 3 and board.file("/f.part") == b"new"


def test_folders_moves_deletes_and_reads_are_idempotent(board: Board) -> None:
    board.M("/", "lib", "/lib")
    board.M("/", "lib", "/lib")  # again: no error
    board.put("/lib/a.py.part", b"print(1)\n")
    board.put("/lib/a.py", b"old\n")
    board.V("/lib", "a.py.part", "/lib/a.py.part", "a.py", "/lib/a.py")
    assert board.file("/lib/a.py") == b"print(1)\n"
    board.V("/lib", "a.py.part", "/lib/a.py.part", "a.py", "/lib/a.py")  # again: the temp is gone, no-op
    assert board.file("/lib/a.py") == b"print(1)\n"
    assert board.F("/lib/a.py") == "print(1)\n"
    board.K("/lib", "a.py", "/lib/a.py")
    board.K("/lib", "a.py", "/lib/a.py")
    assert not board.E("/lib", "a.py")


def test_the_functions_differ_in_arity_so_a_damaged_name_cannot_call_another() -> None:
    tree = ast.parse(helper_source())
    arity = {f.name: len(f.args.args) for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert arity["G"] == 4
    assert all(n != 4 for name, n in arity.items() if name != "G"), arity


def test_what_is_sent_is_the_file_without_docstrings_comments_and_annotations() -> None:
    source = helper_source()
    parts = split_parts(source)
    assert list(parts) == ["stub", "q", "lib"] and list(PARTS) == list(parts)
    for name, text in parts.items():
        sent = PARTS[name].decode()
        assert ast.dump(ast.parse(sent)) == ast.dump(stripped(text)), name
        assert "#" not in sent and '"""' not in sent and "->" not in sent, name
        lines = sent.splitlines()
        assert all(line.strip() and "  " not in line.lstrip(" ") for line in lines), name  # squeezed
    assert PARTS["stub"].startswith(b"import binascii as B\ndef G(n,k,c,d):\n global D,R\n")
    assert b"bytes" not in PARTS["stub"]  # the declarations for the type checker are not sent
    # The pieces cross a noisy line: the stub goes in 40-byte pieces, the library in <= 256-byte chunks.
    assert len(PARTS["stub"]) <= 280 and len(PARTS["q"]) <= 130 and len(PARTS["lib"]) <= 1200
    assert mpy_checked.STUB == PARTS["stub"] and mpy_checked.LIB == PARTS["lib"]


@pytest.mark.parametrize(
    ("code", "squeezed"),
    [
        ("x = 'wb' if o == 0 else 'ab'\n", "x='wb' if o==0 else 'ab'\n"),
        ("def f(a, b):\n    if not a:\n        return (-1, b'')\n    return a in b\n",
         "def f(a,b):\n if not a:\n  return(-1,b'')\n return a in b\n"),
        ("while True:\n    x += 1  # count\n\n    break\n", "while True:\n x+=1\n break\n"),
    ],
)  # fmt: skip
def test_squeeze_keeps_only_the_spaces_python_needs(code: str, squeezed: str) -> None:
    assert squeeze(code) == squeezed
    assert ast.dump(ast.parse(squeezed)) == ast.dump(ast.parse(code))


def _sim_call(interp: MiniPython, nonce: int, code: bytes, data: bytes = b"") -> tuple[Any, Any] | None:
    b64: Callable[[bytes], str] = lambda b: base64.b64encode(b).decode()
    out, err = interp.run(f"G({nonce},{zlib.crc32(code + data)},'{b64(code)}','{b64(data)}')\n")
    assert err == ""
    return mpy_checked._reply_for(out.encode(), nonce)


def test_the_simulated_board_runs_the_helper_as_sent() -> None:
    """The simulator's interpreter runs the squeezed parts. (The readable file it parses but cannot run: G's
    annotated local is syntax it does not implement; a board would not need that either.)"""
    state = BoardState(unique_id=UID)
    interp = MiniPython(state)
    for part in ("stub", "q", "lib"):
        assert interp.run(PARTS[part].decode()) == ("", ""), part
    assert _sim_call(interp, 1, b"R=A('/m.py',0)", b"print(1)\n") == (0, 9)
    digest = hashlib.sha256(b"print(1)\n").hexdigest()
    assert _sim_call(interp, 2, b"R=S('/','m.py','/m.py')") == (0, (9, digest))
    assert _sim_call(interp, 3, b"R=I()")[1][0] == UID.hex()  # type: ignore[index]
    assert state.files["/m.py"] == b"print(1)\n"
