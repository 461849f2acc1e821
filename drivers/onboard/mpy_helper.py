"""The MicroPython driver's helper, as it runs on the board: the checked exec G, the upload buffer Q, and the
device operations (identity, health, files).

The host does not import this module. `drivers/mpy_helper_code.py` reads it as text, cuts it at the
`# ---- part:` lines into the three pieces the driver installs one after the other (`stub`, `q`, `lib`),
drops docstrings, comments and annotations and squeezes the whitespace: every byte crosses a serial line
that may be noisy, and a smaller piece gets through more often. Nothing before the first part is sent.

The names are one letter on purpose. They are the protocol between host and board (the host sends
`R=I()`, `R=A('/x.part',0)`), and their arities differ: G takes four arguments and every other function
another number, so a damaged name that calls one of them directly fails with TypeError instead of running.
Results go back in the global R, which G prints in its checked reply; a command's data operand arrives in
the global D. Every write is idempotent (A appends only at the offset the host names; V and K act only if
their file exists), because the host repeats a call whose reply the line lost.

MicroPython, not CPython: `machine`, `gc.mem_free`, `time.ticks_ms` exist only on the board, and the code
avoids what small ports lack (f-strings, `with`). tests/drivers/test_mpy_helper.py runs it on CPython with
fakes for those modules.
"""

# ruff: noqa: SIM115 - open/close by hand: simulators/serial/minipython.py has no `with`, and boards run it so

# Globals shared with the code G runs; declared for the type checker only (a bare annotation sends nothing).
D: bytes  # the data operand of the current call
R: object  # the result of the current call, printed by G
U: bytes  # the upload buffer Q fills

# ---- part: stub
# G(nonce, crc32, code_b64, data_b64): run `code` only if the CRC-32 of code+data matches, then print
# `LF<repr((nonce, status, R))|crc32>` so that a reply damaged on the way back is recognised too. status is
# None when the CRC did not match (nothing ran), 0 when the code ran, or the repr of what it raised.
import binascii as B


def G(n: int, k: int, c: str, d: str) -> None:
    global D, R
    D = B.a2b_base64(d)
    y = B.a2b_base64(c)
    R = None
    x: int | str | None = None
    if B.crc32(y + D) == k:
        try:
            exec(y, globals())  # noqa: S102 - running the host's CRC-checked code is what G is for
            x = 0
        except Exception as e:  # noqa: BLE001 - any failure goes back to the host as the reply's status
            x = repr(e)
    s = repr((n, x, R))
    print("LF<%s|%d>" % (s, B.crc32(s.encode())))  # noqa: UP031 - small ports have no f-strings


# ---- part: q
# Q(offset): append the data operand to the upload buffer U only at the offset the host names, and return
# U's length; helper code too long for one noisy submission is sent this way and exec'd once complete.
def Q(o: int) -> int:
    global U
    if o == 0:
        U = b""
    try:
        if len(U) == o:
            U += D
        return len(U)
    except NameError:  # a reset since the upload began took U with it: start over
        return 0


# ---- part: lib
import gc
import hashlib
import os
import sys

import machine


def I() -> tuple[str, str, str, str, str, tuple[object, ...], str]:
    """Identity: unique id (hex), uname fields, implementation and its version, app version (or '')."""
    u = os.uname()
    v = ""
    if E("/", "lf_app.json"):
        import json

        f = open("/lf_app.json")
        v = str(json.loads(f.read()).get("version", ""))
        f.close()
    return (
        B.hexlify(machine.unique_id()).decode(),
        u.sysname,
        u.release,
        u.machine,
        sys.implementation.name,
        tuple(sys.implementation.version),
        v,
    )


def H() -> tuple[int, int, int, int, int, int]:
    """Health: heap free and allocated, filesystem free and total bytes, CPU Hz, ms since boot."""
    import time

    gc.collect()
    s = os.statvfs("/")
    return (
        gc.mem_free(),  # type: ignore[attr-defined]  # MicroPython's gc
        gc.mem_alloc(),  # type: ignore[attr-defined]  # MicroPython's gc
        s[0] * s[3],
        s[0] * s[2],
        machine.freq(),
        time.ticks_ms(),  # type: ignore[attr-defined]  # MicroPython's time
    )


def E(d: str, n: str) -> bool:
    """Is there an entry `n` in folder `d` (False if the folder itself is missing)?"""
    try:
        return n in os.listdir(d)
    except OSError:
        return False


def S(d: str, n: str, p: str) -> tuple[int, str]:
    """(size, sha256 hex) of the file `p` (named `n` in folder `d`), or (-1, '') when there is none."""
    if not E(d, n):
        return (-1, "")
    h = hashlib.sha256()
    f = open(p, "rb")
    z = 0
    while True:
        b = f.read(256)
        if not b:
            break
        z += len(b)
        h.update(b)
    f.close()
    return (z, B.hexlify(h.digest()).decode())


def A(p: str, o: int) -> int:
    """Write the data operand at offset `o` of `p` (0: a new file) if the file is that long; its size."""
    try:
        s = os.stat(p)[6]
    except OSError:
        s = -1
    if o == 0 or s == o:
        f = open(p, "wb" if o == 0 else "ab")
        f.write(D)
        f.close()
        s = o + len(D)
    return s


def M(d: str, n: str, p: str) -> None:
    """Make the folder `p` (named `n` in `d`) unless it is there."""
    if not E(d, n):
        os.mkdir(p)


def V(d: str, t: str, u: str, n: str, p: str) -> None:
    """Move the verified temp file `u` (named `t` in `d`) over `p` (named `n`), if the temp file is there."""
    if E(d, t):
        if E(d, n):
            os.remove(p)
        os.rename(u, p)


def K(d: str, n: str, p: str) -> None:
    """Delete `p` (named `n` in `d`) if it is there."""
    if E(d, n):
        os.remove(p)


def F(p: str) -> str:
    """The text of the file `p`."""
    f = open(p)
    t = f.read()
    f.close()
    return t


R = 1  # what installing the library answers (the host's check reads anything but 'LFBAD' as done)
