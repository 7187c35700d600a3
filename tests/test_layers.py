"""The layer rule and no import cycles, read from the source's imports.

DESIGN.md: lower layers never import higher ones — `ir` imports nothing of
wsec but itself; `passes` and `backends` import only `ir` (and themselves);
only `compiler` (the `wsec` package: CLI, driver, frontends, reports) imports
all. No import cycles inside a layer either, counting imports inside
functions too (a lazy import hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
import pathlib

import networkx as nx
import pytest
from conftest import ROOT

# source folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {"ir": "wsec.ir", "passes": "wsec.passes", "backends": "wsec.backends",
            "compiler/frontends": "wsec.frontends", "compiler/ispd": "wsec.ispd",
            "compiler": "wsec"}
ALLOWED = {"wsec.ir": ("wsec.ir",), "wsec.passes": ("wsec.ir", "wsec.passes"),
           "wsec.backends": ("wsec.ir", "wsec.backends")}


def _modules() -> dict[str, pathlib.Path]:
    out: dict[str, pathlib.Path] = {}
    for folder, pkg in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"
            out.setdefault(name, path)
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> set[str]:
    """Every wsec module `name` imports, anywhere in the file."""
    pkg = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "wsec"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "wsec":
                continue
            found.add(mod)
            for a in node.names:  # `from . import x` may name a module
                if f"{mod}.{a.name}" in MODULES:
                    found.add(f"{mod}.{a.name}")
    return {m for m in found if m in MODULES}


def _layer(name: str) -> str:
    for pkg in ("wsec.ir", "wsec.passes", "wsec.backends"):
        if name == pkg or name.startswith(pkg + "."):
            return pkg
    return "wsec"


GRAPH = nx.DiGraph()
for _name, _path in MODULES.items():
    GRAPH.add_node(_name)
    for _dep in _imports(_name, _path):
        if _dep != _name:
            GRAPH.add_edge(_name, _dep)


def test_the_scan_sees_the_packages() -> None:
    assert {"wsec.ir.graph", "wsec.passes.place", "wsec.backends.emit", "wsec.cli",
            "wsec.frontends.onnx", "wsec.ispd.score"} <= set(MODULES)
    assert ("wsec.passes.place", "wsec.ir.sizing") in GRAPH.edges


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _layer(n) in ALLOWED))
def test_lower_layers_import_only_what_they_may(name: str) -> None:
    allowed = ALLOWED[_layer(name)]
    bad = sorted(d for d in GRAPH.successors(name) if _layer(d) not in allowed)
    assert not bad, f"{name} ({MODULES[name].relative_to(ROOT)}) imports {bad}: " \
                    f"the layer {_layer(name)} may import only {', '.join(allowed)}"


def test_no_import_cycles() -> None:
    cycles = sorted(sorted(c) for c in nx.simple_cycles(GRAPH))
    assert not cycles, f"import cycles: {cycles[:5]}"
