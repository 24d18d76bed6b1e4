"""The layering of ARCHITECTURE.md as a test: a module may import only its own layer or the layers below,
and no two modules import each other (directly or through a cycle), lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hwnat"

#: lowest first; a module may import modules of its own rank or lower
LAYERS = [
    {"hwnat", "hwnat.errors", "hwnat._registry", "hwnat._io", "hwnat.data"},
    {"hwnat.nn"},
    {"hwnat.spaces"},
    {"hwnat.measure"},
    {"hwnat.devices"},
    {"hwnat.export"},
    {"hwnat.latency"},
    {"hwnat.search", "hwnat.mtl", "hwnat.bench", "hwnat.report"},
    {"hwnat.cli"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        for rank, layer in enumerate(LAYERS):
            if prefix in layer:
                return rank
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS and ARCHITECTURE.md")


def _imports(path: Path) -> set[str]:
    """Every hwnat module ``path`` imports, at any depth (function-level lazy imports count too)."""
    tree = ast.parse(path.read_text())
    pkg = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "hwnat"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "hwnat":
                continue
            for a in node.names:  # `from hwnat.x import y` may name a submodule y
                sub = f"{mod}.{a.name}"
                out.add(sub if _exists(sub) else mod)
    return out


def _exists(module: str) -> bool:
    p = PKG.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def test_every_module_imports_only_its_layer_or_below():
    bad = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
           for m, targets in _graph().items() for t in sorted(targets) if _layer(t) > _layer(m)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ re-exporting its own modules is the front door, not a cycle
    edges = {m: {t for t in ts if t in graph and t != m and not m.startswith(t + ".")} for m, ts in graph.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("bad", ["hwnat.cli.main", "hwnat.search"])
def test_the_check_catches_an_upward_import(tmp_path, bad):
    f = PKG / "spaces" / "_layering_probe.py"
    assert not f.exists()
    f.write_text(f"def late():\n    import {bad}\n")
    try:
        assert any(_layer(t) > _layer("hwnat.spaces._layering_probe") for t in _imports(f))
    finally:
        f.unlink()
