"""A small, safe interpreter for the Python the MicroPython driver sends to a board.

It walks the `ast` of the submitted code and evaluates a limited subset: imports of simulated
modules, assignments, calls, attribute access on simulated objects, if/while/for, and a step
budget so a runaway loop ends with an error instead of hanging the simulator. Nothing is passed
to `exec` or `eval`; unknown syntax raises an error the board reports like MicroPython would.
"""

from __future__ import annotations

import ast
import binascii
import hashlib
import json
import operator
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

# Enough for every script the driver sends (a 64 KiB file hashed 256 bytes at a time takes ~2k
# steps); a loop that needs more is a bug we want to see as an error.
STEP_BUDGET = 200_000
# A board has ~100 KiB of heap; refusing bigger values keeps a hostile script from eating ours.
MAX_VALUE_LEN = 1 << 20


class MpyError(Exception):
    """An exception raised 'on the board'; `kind` is its MicroPython class name."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


# Nested exec() calls and function calls a script may make before it is a runaway.
MAX_DEPTH = 16


class _Function:
    """A function defined by submitted code: positional parameters, its own local scope."""

    def __init__(self, interp: MiniPython, node: ast.FunctionDef) -> None:
        self._interp = interp
        self._node = node
        self.name = node.name

    def __call__(self, *args: Any) -> Any:
        return self._interp._call(self._node, args)

    def __repr__(self) -> str:
        return f"<function {self.name}>"


@dataclass
class BoardState:
    """The simulated board: identity, filesystem, memory."""

    unique_id: bytes
    sysname: str = "esp32"
    release: str = "1.23.0"
    version_str: str = "v1.23.0 on 2024-06-02"
    machine_name: str = "Generic ESP32 module with ESP32"
    impl_version: tuple[int, int, int] = (1, 23, 0)
    freq: int = 160_000_000
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/"})
    mem_total: int = 110_000
    mem_used: int = 18_000
    fs_block: int = 4096
    fs_blocks: int = 512
    ticks_ms: int = 0
    resets: int = 0
    corrupt_writes: bool = False  # fault: the flash flips a bit in every write (a dying chip)
    # Every change to the filesystem or machine: (what, path, inside a verified exec()?). The noise
    # tests check that nothing changes outside the code the driver's checked helper executes.
    mutations: list[tuple[str, str, bool]] = field(default_factory=list)
    exec_depth: int = 0

    def mutated(self, what: str, path: str) -> None:
        self.mutations.append((what, path, self.exec_depth > 0))


class _Obj:
    """Base for simulated objects: attribute access is limited to public names."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class _UName(tuple[str, str, str, str, str]):
    __slots__ = ()

    def __new__(cls, fields: tuple[str, str, str, str, str]) -> Self:
        return super().__new__(cls, fields)

    sysname = property(operator.itemgetter(0))
    nodename = property(operator.itemgetter(1))
    release = property(operator.itemgetter(2))
    version = property(operator.itemgetter(3))
    machine = property(operator.itemgetter(4))


def _norm(path: str) -> str:
    if not path.startswith("/"):
        path = "/" + path
    parts = [p for p in path.split("/") if p and p != "."]
    return "/" + "/".join(parts)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class _File(_Obj):
    def __init__(self, board: BoardState, path: str, mode: str) -> None:
        self._board = board
        self._path = path
        self._binary = "b" in mode
        self._writing = "w" in mode or "a" in mode
        self._pos = 0
        self._closed = False
        if "w" in mode:
            board.mutated("truncate", path)
            board.files[path] = b""
        elif "a" in mode:
            board.files.setdefault(path, b"")
        elif path not in board.files:
            raise MpyError("OSError", "[Errno 2] ENOENT")

    def write(self, data: Any) -> int:
        if self._closed or not self._writing:
            raise MpyError("OSError", "[Errno 9] EBADF")
        raw = data if isinstance(data, bytes) else str(data).encode()
        if self._board.corrupt_writes and raw:
            raw = bytes([raw[0] ^ 0x01]) + raw[1:]
        self._board.mutated("write", self._path)
        self._board.files[self._path] += raw
        return len(raw)

    def read(self, n: int = -1) -> Any:
        if self._closed or self._writing:
            raise MpyError("OSError", "[Errno 9] EBADF")
        blob = self._board.files.get(self._path, b"")
        end = len(blob) if n is None or n < 0 else self._pos + n
        out = blob[self._pos : end]
        self._pos += len(out)
        return out if self._binary else out.decode()

    def readinto(self, buf: Any) -> int:
        """Fill `buf` (a bytearray or a memoryview of one) from the file; 0 at the end, like MicroPython."""
        if self._closed or self._writing:
            raise MpyError("OSError", "[Errno 9] EBADF")
        if not isinstance(buf, bytearray | memoryview) or getattr(buf, "readonly", False):
            raise MpyError("TypeError", "object with buffer protocol required")
        blob = self._board.files.get(self._path, b"")
        out = blob[self._pos : self._pos + len(buf)]
        buf[: len(out)] = out
        self._pos += len(out)
        return len(out)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._closed = True


class _Vfs(_Obj):
    """The filesystem object `vfs.mount()` lists: an ESP32 port formats its flash as littlefs v2."""

    def __repr__(self) -> str:
        return "<VfsLfs2>"


class _Sha256(_Obj):
    def __init__(self, data: bytes = b"") -> None:
        self._h = hashlib.sha256(data)

    def update(self, data: Any) -> None:
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MpyError("TypeError", "object with buffer protocol required")
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()


class _Module(_Obj):
    def __init__(self, name: str, **members: Any) -> None:
        self._name = name
        self._members = members

    def get(self, attr: str) -> Any:
        if attr not in self._members:
            raise MpyError("AttributeError", f"'module' object has no attribute '{attr}'")
        return self._members[attr]


class _Impl(_Obj):
    def __init__(self, name: str, version: tuple[int, int, int]) -> None:
        self.name = name
        self.version = version


def make_modules(board: BoardState, on_reset: Callable[[], None]) -> dict[str, _Module]:
    root_vfs = _Vfs()

    def listdir(path: str = "/") -> list[str]:
        base = _norm(path)
        if base not in board.dirs:
            raise MpyError("OSError", "[Errno 2] ENOENT")
        names = {
            p[len(base) :].lstrip("/").split("/")[0]
            for p in list(board.files) + list(board.dirs)
            if p != base and _parent(p) == base
        }
        return sorted(names)

    def remove(path: str) -> None:
        board.mutated("remove", _norm(path))
        if board.files.pop(_norm(path), None) is None:
            raise MpyError("OSError", "[Errno 2] ENOENT")

    def rename(old: str, new: str) -> None:
        old, new = _norm(old), _norm(new)
        board.mutated("rename", new)
        if old not in board.files:
            raise MpyError("OSError", "[Errno 2] ENOENT")
        board.files[new] = board.files.pop(old)

    def mkdir(path: str) -> None:
        path = _norm(path)
        board.mutated("mkdir", path)
        if path in board.dirs or path in board.files:
            raise MpyError("OSError", "[Errno 17] EEXIST")
        if _parent(path) not in board.dirs:
            raise MpyError("OSError", "[Errno 2] ENOENT")
        board.dirs.add(path)

    def ilistdir(path: str = "/") -> list[tuple[str, int, int, int]]:
        # (name, type, inode, size) as littlefs reports them; mpremote's `fs ls` reads all four.
        base = _norm(path)
        out = []
        for name in listdir(base):
            full = _norm(base + "/" + name)
            if full in board.dirs:
                out.append((name, 0x4000, 0, 0))
            else:
                out.append((name, 0x8000, 0, len(board.files.get(full, b""))))
        return out

    def rmdir(path: str) -> None:
        path = _norm(path)
        board.mutated("rmdir", path)
        if path not in board.dirs or path == "/":
            raise MpyError("OSError", "[Errno 2] ENOENT")
        if listdir(path):
            raise MpyError("OSError", "[Errno 39] ENOTEMPTY")
        board.dirs.discard(path)

    def statvfs(path: str = "/") -> tuple[int, ...]:
        used = sum(-(-len(b) // board.fs_block) for b in board.files.values())
        free = max(0, board.fs_blocks - used)
        return (board.fs_block, board.fs_block, board.fs_blocks, free, free, 0, 0, 0, 0, 255)

    def stat(path: str) -> tuple[int, ...]:
        path = _norm(path)
        if path in board.dirs:
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        if path not in board.files:
            raise MpyError("OSError", "[Errno 2] ENOENT")
        return (0x8000, 0, 0, 0, 0, 0, len(board.files[path]), 0, 0, 0)

    def uname() -> _UName:
        return _UName((board.sysname, board.sysname, board.release, board.version_str, board.machine_name))

    def ticks_ms() -> int:
        board.ticks_ms += 7
        return board.ticks_ms

    def hexlify(data: bytes, sep: Any = None) -> bytes:
        return data.hex().encode()

    def a2b_base64(data: Any) -> bytes:
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError) as err:
            raise MpyError("ValueError", "incorrect padding") from err

    def crc32(data: Any, crc: int = 0) -> int:
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, bytes | bytearray):
            raise MpyError("TypeError", "object with buffer protocol required")
        return zlib.crc32(data, crc)

    def reset() -> None:
        board.mutated("reset", "")
        on_reset()

    return {
        "machine": _Module(
            "machine", unique_id=lambda: board.unique_id, freq=lambda: board.freq, reset=reset
        ),
        "os": _Module(
            "os",
            uname=uname,
            listdir=listdir,
            remove=remove,
            rename=rename,
            mkdir=mkdir,
            rmdir=rmdir,
            statvfs=statvfs,
            stat=stat,
            ilistdir=ilistdir,
            getcwd=lambda: "/",
        ),
        # MicroPython 1.23 moved mount() and friends from os to vfs; mpremote's `df` asks vfs.
        "vfs": _Module("vfs", mount=lambda: [(root_vfs, "/")]),
        "sys": _Module(
            "sys", implementation=_Impl("micropython", board.impl_version), platform=board.sysname
        ),
        "binascii": _Module("binascii", hexlify=hexlify, a2b_base64=a2b_base64, crc32=crc32),
        "ubinascii": _Module("ubinascii", hexlify=hexlify, a2b_base64=a2b_base64, crc32=crc32),
        "gc": _Module(
            "gc",
            collect=lambda: None,
            mem_free=lambda: board.mem_total - board.mem_used,
            mem_alloc=lambda: board.mem_used,
        ),
        "time": _Module("time", ticks_ms=ticks_ms),
        "json": _Module("json", loads=_json_loads, dumps=json.dumps),
        "hashlib": _Module("hashlib", sha256=_Sha256),
    }


_BIN_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
_CMP_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
# Methods of built-in values the driver's scripts use; everything else is an AttributeError.
_SAFE_METHODS = {
    bytes: {"decode", "hex", "startswith", "endswith"},
    str: {"encode", "strip", "split", "startswith", "endswith", "join", "format"},
    bytearray: {"decode", "hex"},
    list: {"append"},
    dict: {"get", "items", "keys"},
}


class MiniPython:
    """Evaluates submitted code against a BoardState; globals persist between runs like a REPL."""

    def __init__(self, board: BoardState, on_reset: Callable[[], None] = lambda: None) -> None:
        self.board = board
        self.modules = make_modules(board, on_reset)
        self.globals: dict[str, Any] = {}
        self._out: list[str] = []
        self._steps = 0
        self.builtins: dict[str, Any] = {
            "print": self._print,
            "repr": _mpy_repr,
            "open": self._open,
            "tuple": tuple,
            "len": len,
            "str": str,
            "int": int,
            "list": list,
            "bytes": _bytes,
            "True": True,
            "False": False,
            "None": None,
            "OSError": MpyError,
            "Exception": MpyError,
            "min": min,
            "max": max,
            "range": range,
            "exec": self._exec,
            "globals": lambda: self.globals,
            "bytearray": _bytearray,
            "memoryview": memoryview,
            "hasattr": self._hasattr,
            "isinstance": isinstance,
            "ImportError": MpyError,
            "KeyboardInterrupt": MpyError,
        }
        # Function scope: the innermost call's locals and its `global` names (None at module level).
        self._locals: dict[str, Any] | None = None
        self._global_names: set[str] = set()
        self._depth = 0
        # Code run through exec(), with the value of the global `D` at that moment: the driver's
        # checked helper passes a command's data operand in `D` (drivers/micropython.py).
        self.exec_log: list[tuple[bytes, bytes]] = []

    def reset(self) -> None:
        self.globals.clear()

    def run(self, code: str, *, echo: bool = False) -> tuple[str, str]:
        """Run `code`; return (stdout, error text) as the raw REPL would send them.

        `echo`: as the friendly REPL does, print the value of each expression statement that is not None.
        """
        self._out = []
        self._steps = 0
        self._locals, self._global_names, self._depth = None, set(), 0
        self.board.exec_depth = 0
        try:
            with warnings.catch_warnings():  # damaged code makes CPython's parser warn; a board would not
                warnings.simplefilter("ignore")
                tree = ast.parse(code, "<stdin>", "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as err:  # ValueError: a NUL byte
            return "", (
                "Traceback (most recent call last):\r\n"
                f'  File "<stdin>", line {getattr(err, "lineno", 1)}\r\n'
                "SyntaxError: invalid syntax\r\n"
            )
        try:
            if echo:
                for stmt in tree.body:
                    if isinstance(stmt, ast.Expr):
                        self._tick()
                        value = self._eval(stmt.value)
                        if value is not None:
                            self._out.append(_mpy_repr(value) + "\r\n")
                    else:
                        self._stmt(stmt)
            else:
                self._block(tree.body)
        except MpyError as err:
            return "".join(self._out), _traceback(err.kind, err.message)
        except (_Break, _Continue, _Return):
            return "".join(self._out), _traceback("SyntaxError", "'break' outside loop")
        except (
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            ZeroDivisionError,
            AttributeError,
            OverflowError,
            MemoryError,
            RecursionError,
        ) as err:
            # Damaged code on a noisy line reaches any corner of the interpreter: it must fail like a
            # board would (an exception), never crash the simulator.
            return "".join(self._out), _traceback(type(err).__name__, str(err))
        return "".join(self._out), ""

    # ---- statements ----

    def _tick(self) -> None:
        self._steps += 1
        if self._steps > STEP_BUDGET:
            raise MpyError("RuntimeError", "simulator step budget exhausted")

    def _block(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self._stmt(stmt)

    def _stmt(self, node: ast.stmt) -> None:
        self._tick()
        if isinstance(node, ast.Expr):
            self._eval(node.value)
        elif isinstance(node, ast.FunctionDef):
            if (
                node.args.vararg
                or node.args.kwarg
                or node.args.kwonlyargs
                or node.args.defaults
                or node.decorator_list
            ):
                raise MpyError("SyntaxError", "only plain positional parameters are simulated")
            self._set(node.name, _Function(self, node))
        elif isinstance(node, ast.Global):
            if self._locals is not None:
                self._global_names.update(node.names)
        elif isinstance(node, ast.Return):
            raise _Return(self._eval(node.value) if node.value is not None else None)
        elif isinstance(node, ast.Raise):
            exc = self._eval(node.exc) if node.exc is not None else MpyError("RuntimeError", "re-raise")
            if not isinstance(exc, MpyError):
                raise MpyError("TypeError", "exceptions must derive from BaseException")
            raise exc
        elif isinstance(node, ast.Assign):
            value = self._eval(node.value)
            for target in node.targets:
                self._assign(target, value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            op = _BIN_OPS.get(type(node.op))
            if op is None:
                raise MpyError("SyntaxError", "unsupported operator")
            self._set(node.target.id, op(self._name(node.target.id), self._eval(node.value)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                self._set(alias.asname or alias.name, self._module(alias.name))
        elif isinstance(node, ast.ImportFrom):
            mod = self._module(node.module or "")
            for alias in node.names:
                self._set(alias.asname or alias.name, mod.get(alias.name))
        elif isinstance(node, ast.If):
            self._block(node.body if self._eval(node.test) else node.orelse)
        elif isinstance(node, ast.While):
            while self._eval(node.test):
                self._tick()
                try:
                    self._block(node.body)
                except _Break:
                    break
                except _Continue:
                    continue
        elif isinstance(node, ast.For):
            for item in self._eval(node.iter):
                self._tick()
                self._assign(node.target, item)
                try:
                    self._block(node.body)
                except _Break:
                    break
                except _Continue:
                    continue
        elif isinstance(node, ast.With):
            self._with(node)
        elif isinstance(node, ast.Break):
            raise _Break
        elif isinstance(node, ast.Continue):
            raise _Continue
        elif isinstance(node, ast.Pass):
            pass
        elif isinstance(node, ast.Try):
            try:
                try:
                    self._block(node.body)
                except (
                    TypeError,
                    ValueError,
                    KeyError,
                    IndexError,
                    ZeroDivisionError,
                    AttributeError,
                ) as native:
                    raise MpyError(type(native).__name__, str(native)) from native
            except MpyError as err:
                handler = next((h for h in node.handlers if self._matches(h, err)), None)
                if handler is None:
                    raise
                if handler.name:
                    self._set(handler.name, err)
                self._block(handler.body)
            else:
                self._block(node.orelse)
        else:
            raise MpyError("SyntaxError", f"{type(node).__name__} not supported by the simulator")

    def _with(self, node: ast.With) -> None:
        """`with open(...) as f:` - the only context managers a board script uses are files."""
        opened: list[_File] = []
        try:
            for item in node.items:
                ctx = self._eval(item.context_expr)
                if not isinstance(ctx, _File):
                    raise MpyError("AttributeError", "'object' has no attribute '__enter__'")
                opened.append(ctx)
                if item.optional_vars is not None:
                    self._assign(item.optional_vars, ctx)
            self._block(node.body)
        finally:
            for f in opened:
                f.close()

    def _hasattr(self, obj: Any, attr: str) -> bool:
        try:
            self._getattr(obj, attr)
        except MpyError:
            return False
        return True

    def _matches(self, handler: ast.ExceptHandler, err: MpyError) -> bool:
        if handler.type is None:
            return True
        return isinstance(handler.type, ast.Name) and handler.type.id in (err.kind, "Exception")

    def _set(self, name: str, value: Any) -> None:
        if self._locals is not None and name not in self._global_names:
            self._locals[name] = value
        else:
            self.globals[name] = value

    def _call(self, node: ast.FunctionDef, args: tuple[Any, ...]) -> Any:
        params = [a.arg for a in node.args.args]
        if len(args) != len(params):
            raise MpyError(
                "TypeError", f"function takes {len(params)} positional arguments but {len(args)} were given"
            )
        if self._depth >= MAX_DEPTH:
            raise MpyError("RuntimeError", "maximum recursion depth exceeded")
        saved = self._locals, self._global_names
        self._locals, self._global_names = dict(zip(params, args, strict=True)), set()
        self._depth += 1
        try:
            self._block(node.body)
        except _Return as ret:
            return ret.value
        finally:
            self._locals, self._global_names = saved
            self._depth -= 1
        return None

    def _exec(self, code: Any, scope: Any = None) -> None:
        """exec(code[, globals()]): runs at module level, like MicroPython's exec at the REPL."""
        if scope is not None and scope is not self.globals:
            raise MpyError("TypeError", "the simulator runs exec() in the board's globals only")
        if isinstance(code, bytes):
            try:
                code = code.decode()
            except UnicodeDecodeError:
                raise MpyError("UnicodeError", "") from None
        if not isinstance(code, str):
            raise MpyError("TypeError", "exec() arg 1 must be a string")
        if self._depth >= MAX_DEPTH:
            raise MpyError("RuntimeError", "maximum recursion depth exceeded")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(code, "<string>", "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise MpyError("SyntaxError", "invalid syntax") from None
        data = self.globals.get("D", b"")
        self.exec_log.append((code.encode(), data if isinstance(data, bytes) else b""))
        saved = self._locals, self._global_names
        self._locals, self._global_names = None, set()
        self._depth += 1
        self.board.exec_depth += 1
        try:
            self._block(tree.body)
        finally:
            self._locals, self._global_names = saved
            self._depth -= 1
            self.board.exec_depth -= 1

    def _assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self._set(target.id, value)
        elif isinstance(target, ast.Tuple) and all(isinstance(t, ast.Name) for t in target.elts):
            values = list(value)
            if len(values) != len(target.elts):
                raise MpyError("ValueError", "wrong number of values to unpack")
            for t, v in zip(target.elts, values, strict=True):
                self._set(t.id, v)  # type: ignore[attr-defined]  # all ast.Name: checked above
        elif isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            container = self._eval(target.value)
            if not isinstance(container, dict | list):
                raise MpyError("TypeError", "object doesn't support item assignment")
            container[self._eval(target.slice)] = value
        else:
            raise MpyError("SyntaxError", "unsupported assignment target")

    def _module(self, name: str) -> _Module:
        if name not in self.modules:
            raise MpyError("ImportError", f"no module named '{name}'")
        return self.modules[name]

    # ---- expressions ----

    def _name(self, name: str) -> Any:
        if self._locals is not None and name in self._locals and name not in self._global_names:
            return self._locals[name]
        if name in self.globals:
            return self.globals[name]
        if name in self.builtins:
            return self.builtins[name]
        raise MpyError("NameError", f"name '{name}' isn't defined")

    def _eval(self, node: ast.expr) -> Any:
        self._tick()
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.Tuple):
            return tuple(self._eval(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [self._eval(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {
                self._eval(k): self._eval(v)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            }
        if isinstance(node, ast.Attribute):
            return self._getattr(self._eval(node.value), node.attr)
        if isinstance(node, ast.Call):
            func = self._eval(node.func)
            args = [self._eval(a) for a in node.args]
            kwargs = {k.arg: self._eval(k.value) for k in node.keywords if k.arg}
            if not callable(func):
                raise MpyError("TypeError", "object isn't callable")
            return func(*args, **kwargs)
        if isinstance(node, ast.BinOp):
            op = _BIN_OPS.get(type(node.op))
            if op is None:
                raise MpyError("SyntaxError", "unsupported operator")
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Mult):
                seq, times = (left, right) if isinstance(right, int) else (right, left)
                if (
                    isinstance(seq, bytes | str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_VALUE_LEN
                ):
                    raise MpyError("MemoryError", "memory allocation failed")
            return op(left, right)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not value
            if isinstance(node.op, ast.USub):
                return -value
            raise MpyError("SyntaxError", "unsupported operator")
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for value_node in node.values:
                result = self._eval(value_node)
                if isinstance(node.op, ast.And) and not result:
                    return result
                if isinstance(node.op, ast.Or) and result:
                    return result
            return result
        if isinstance(node, ast.Compare):
            left = self._eval(node.left)
            for op_node, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._eval(right_node)
                if not _CMP_OPS[type(op_node)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self._eval(node.body) if self._eval(node.test) else self._eval(node.orelse)
        if isinstance(node, ast.Subscript):
            container = self._eval(node.value)
            if isinstance(node.slice, ast.Slice):
                lo = self._eval(node.slice.lower) if node.slice.lower else None
                hi = self._eval(node.slice.upper) if node.slice.upper else None
                return container[lo:hi]
            return container[self._eval(node.slice)]
        raise MpyError("SyntaxError", f"{type(node).__name__} not supported by the simulator")

    def _getattr(self, obj: Any, attr: str) -> Any:
        if attr.startswith("_"):
            raise MpyError("AttributeError", f"no attribute '{attr}'")
        if isinstance(obj, _Module):
            return obj.get(attr)
        if isinstance(obj, memoryview) and attr in ("hex", "tobytes"):
            return getattr(obj, attr)
        if isinstance(obj, _Obj | _UName) and hasattr(obj, attr):
            return getattr(obj, attr)
        for kind, names in _SAFE_METHODS.items():
            if isinstance(obj, kind) and attr in names:
                return getattr(obj, attr)
        raise MpyError("AttributeError", f"'{type(obj).__name__}' object has no attribute '{attr}'")

    # ---- builtins ----

    def _print(self, *args: Any, end: str = "\n", sep: str = " ") -> None:
        self._out.append(sep.join(_mpy_str(a) for a in args) + end.replace("\n", "\r\n"))

    def _open(self, path: str, mode: str = "r") -> _File:
        path = _norm(path)
        if _parent(path) not in self.board.dirs:
            raise MpyError("OSError", "[Errno 2] ENOENT")
        return _File(self.board, path, mode)


def _bytearray(value: Any = b"", *args: Any) -> bytearray:
    if isinstance(value, int) and value > MAX_VALUE_LEN:
        raise MpyError("MemoryError", "memory allocation failed")
    return bytearray(value, *args)


def _bytes(value: Any = b"", *args: Any) -> bytes:
    if isinstance(value, int) and value > MAX_VALUE_LEN:
        raise MpyError("MemoryError", "memory allocation failed")
    return bytes(value, *args)


def _mpy_str(value: Any) -> str:
    return value if isinstance(value, str) else _mpy_repr(value)


def _mpy_repr(value: Any) -> str:
    if isinstance(value, MpyError):
        return f"{value.kind}({value.message!r})"
    if isinstance(value, _UName):
        return repr(tuple(value))
    if isinstance(value, _Sha256 | _File | _Module):
        return repr(value)
    return repr(value)


def _traceback(kind: str, message: str) -> str:
    text = f"{kind}: {message}" if message else kind
    return f'Traceback (most recent call last):\r\n  File "<stdin>", line 1, in <module>\r\n{text}\r\n'


def _json_loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError) as err:
        raise MpyError("ValueError", "syntax error in JSON") from err


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
