"""Import rules the layering depends on: what simulators may import from fleet, and no cycles among them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Pure, stand-alone modules: the protocol codec, the third-party seams, the supervision helper, and the
# message catalogs (a simulator's report is read by people too: its words go through the same gettext).
# Simulators reuse them (as they reuse drivers/ and firmware_profiles/) and nothing else of fleet.
SHARED = {
    "fleet.i18n",
    "fleet.domain.wire",
    "fleet.domain.update_wire",
    "fleet.compat",
    "fleet.compat.amqtt",
    "fleet.compat.paho",
    "fleet.runtime.supervise",
}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (type-checking-only imports included: a cycle there is a cycle too)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _package(pkg: str) -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in sorted((ROOT / pkg.replace(".", "/")).rglob("*.py"))}


def test_simulators_import_only_the_shared_pure_modules_of_fleet() -> None:
    bad = {
        (mod, imp)
        for mod, imps in _package("simulators").items()
        for imp in imps
        if imp.split(".")[0] == "fleet"
        and imp not in SHARED
        and not any(imp.startswith(s + ".") for s in SHARED)
    }
    # `from fleet.domain import wire` names the package and the module: the package itself is not a use.
    bad -= {(mod, imp) for mod, imp in bad if imp in ("fleet", "fleet.domain", "fleet.runtime")}
    assert not bad, sorted(bad)


def test_the_shared_modules_import_nothing_else_from_fleet() -> None:
    for name in SHARED:
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"
        imps = {i for i in _imports(path) if i.split(".")[0] == "fleet"}
        others = {i for i in imps if i not in SHARED and i not in ("fleet", "fleet.domain", "fleet.runtime")}
        others = {i for i in others if not any(i.startswith(s + ".") for s in SHARED)}
        assert not others, (name, others)


def test_the_district_simulator_has_no_import_cycles() -> None:
    graph = {
        m: {i for i in imps if i.startswith("simulators.")} for m, imps in _package("simulators").items()
    }
    graph = {
        m: {i if i in graph else i.rsplit(".", 1)[0] for i in deps} & graph.keys()
        for m, deps in graph.items()
    }
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif len(path) < 12:
                visit(nxt, [*path, nxt])

    for start in graph:
        visit(start, [start])
    assert not cycles, cycles[:5]
