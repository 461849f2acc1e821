"""The MicroPython helper as the driver sends it: `drivers/onboard/mpy_helper.py`, cut into its parts and
squeezed.

The helper is kept as a readable, linted, tested Python file. What goes to the board is smaller: docstrings,
comments and annotations dropped, one space of indentation, no space a Python parser does not need. Every
byte crosses a serial line that may be noisy (at a 1% byte error rate a submission's chance of arriving
intact falls by a third every 40 bytes), and MicroPython ignores annotations at best. The squeezed code has
the same syntax tree as the file without them, which tests/drivers/test_mpy_helper.py checks.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from importlib import resources

# A line `# ---- part: <name>` starts a part; the file's head before the first one is not sent.
PART_MARK = re.compile(r"^# ---- part: (\w+)$")
# Tokens that need a space between them when they meet (`return x`, `0 else`, `'wb' if`).
_WORDY = {tokenize.NAME, tokenize.NUMBER, tokenize.STRING}


def helper_source() -> str:
    """The helper file's text, read from the installed package."""
    return resources.files("drivers.onboard").joinpath("mpy_helper.py").read_text(encoding="utf-8")


def split_parts(source: str) -> dict[str, str]:
    """The text of each `# ---- part:` of the file, in order."""
    parts: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in source.splitlines():
        m = PART_MARK.match(line)
        if m:
            current = parts.setdefault(m.group(1), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) + "\n" for name, lines in parts.items()}


class _Strip(ast.NodeTransformer):
    """Removes what the board does not need: docstrings, annotations, declarations without a value."""

    def _body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        first = body[0] if body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            body = body[1:]
        return body or [ast.Pass()]

    def visit_Module(self, node: ast.Module) -> ast.Module:
        node.body = self._body(node.body)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.body = self._body(node.body)
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.Assign | None:
        if node.value is None:
            return None  # `D: bytes` only declares a name for the type checker
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)


def stripped(source: str) -> ast.Module:
    """The syntax tree of `source` without docstrings and annotations."""
    tree = _Strip().visit(ast.parse(source))
    assert isinstance(tree, ast.Module)
    return ast.fix_missing_locations(tree)


def squeeze(code: str) -> str:
    """`code` with one space per indentation level, no comments or blank lines, and a space between two
    tokens only where they would otherwise run together."""
    lines: list[str] = []
    depth = 0
    words: list[str] = []
    prev: int | None = None
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.NEWLINE:
            lines.append(" " * depth + "".join(words))
            words, prev = [], None
        elif tok.type in (tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER):
            continue
        else:
            if prev in _WORDY and tok.type in _WORDY:
                words.append(" ")
            words.append(tok.string)
            prev = tok.type
    return "\n".join(lines) + "\n"


def minify(source: str) -> str:
    """What is sent for one part of the helper: its syntax tree without docstrings and annotations,
    written back squeezed."""
    return squeeze(ast.unparse(stripped(source)))


def helper_parts(source: str | None = None) -> dict[str, bytes]:
    """Each part of the helper as it is sent to the board."""
    text = helper_source() if source is None else source
    return {name: minify(part).encode() for name, part in split_parts(text).items()}
