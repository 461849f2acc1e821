"""MicroPython raw REPL: the control bytes and the pure parts of the protocol
(docs/protocol-serial-kits.md)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from drivers.errors import FrameError

CTRL_A = b"\x01"  # enter raw REPL
CTRL_B = b"\x02"  # leave raw REPL (friendly REPL)
CTRL_C = b"\x03"  # interrupt the running program
CTRL_D = b"\x04"  # end of input: execute (or soft reset on an empty line)
CTRL_E = b"\x05"  # with "A\x01": ask for raw-paste mode
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
RAW_PASTE_REQUEST = b"\x05A\x01"
RAW_PASTE_SUPPORTED = b"R\x01"
RAW_PASTE_REFUSED = b"R\x00"
SOFT_REBOOT = b"soft reboot\r\n"
# Output of one command we are willing to parse as a Python literal (identify, health).
MAX_LITERAL = 4096


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What one raw-REPL execution printed on stdout and stderr."""

    out: bytes
    err: bytes

    @property
    def failed(self) -> bool:
        return bool(self.err.strip())

    def error_line(self) -> str:
        """The last line of a traceback, e.g. 'OSError: [Errno 2] ENOENT'."""
        lines = [ln for ln in self.err.decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""


def parse_literal(out: bytes) -> Any:
    """Parse printed `repr()` output from the board; FrameError('literal') if it is not a literal."""
    if len(out) > MAX_LITERAL:
        raise FrameError("literal", f"{len(out)} bytes of output")
    try:
        return ast.literal_eval(out.decode().strip())
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as err:
        raise FrameError("literal", repr(out[:80])) from err


def bytes_literal(data: bytes) -> str:
    """A Python bytes literal the board's compiler reads back as `data`."""
    return repr(data)


def py_str(value: str) -> str:
    """A Python string literal for `value` (paths, versions)."""
    return repr(value)
