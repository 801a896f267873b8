"""The package's layering, read from the source with ``ast``: this table is also its documentation.

A module may import its own folder and the layers below its own. The command line (``cli``) is
the only place that prints or exits. Imports under ``if TYPE_CHECKING:`` count too: a type
that needs a higher layer is a sign the code sits in the wrong place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gptiny_cli"

# Each part of the package, with the parts it may import (besides itself).
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "bpe": {"errors"},
    "data": {"errors", "bpe"},
    "model": {"errors", "config"},
    "store": {"errors", "config", "data", "bpe", "model"},
    "hardware": {"errors", "config", "model"},
    "prepare": {"errors", "config", "data", "bpe", "store"},
    "generation": {"errors", "config", "data", "bpe", "model", "hardware"},
    "training": {"errors", "config", "data", "bpe", "model", "store", "hardware"},
    "report": {"errors", "config", "data", "bpe", "model", "store", "hardware", "prepare", "generation", "training"},
    "export": {"errors", "config", "data", "bpe", "model", "store", "hardware", "generation"},
    "serve": {"errors", "config", "data", "bpe", "model", "store", "hardware", "prepare", "generation", "training",
              "report"},
    "sweep": {"errors", "config", "data", "bpe", "model", "store", "hardware", "training", "report"},
    "cli": {"errors", "config", "data", "bpe", "model", "store", "hardware", "prepare", "generation", "training",
            "report", "export", "serve", "sweep"},
    "__main__": {"cli"},
}
ALLOWED_TO_PRINT = {"cli", "__main__"}


def _modules() -> dict[str, Path]:
    """Dotted name (below gptiny_cli) of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name or "__init__"] = path
    return found


def _imports(path: Path) -> set[str]:
    """The modules of ours that a file imports, as dotted names below gptiny_cli."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gptiny_cli"):
            base = node.module.removeprefix("gptiny_cli").lstrip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                names.add(candidate if candidate in MODULES else base)
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("gptiny_cli.") for a in node.names if a.name.startswith("gptiny_cli."))
    return {name for name in names if name}


def _part(module: str) -> str:
    return module.split(".")[0]


MODULES = _modules()
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_part_of_the_package_has_a_place_in_the_layers():
    parts = {_part(name) for name in MODULES} - {"__init__"}
    assert parts <= LAYERS.keys(), f"add {sorted(parts - LAYERS.keys())} to LAYERS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_own_part_and_the_layers_below(module):
    part = _part(module)
    allowed = LAYERS.get(part, set()) | {part}
    wrong = sorted(name for name in GRAPH[module] if _part(name) not in allowed)
    assert not wrong, f"gptiny_cli.{module} ({part}) may not import {wrong}"


def test_the_imports_of_the_package_have_no_circle():
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH.get(name, ())):
            if state.get(target) == "open":
                circle = path[path.index(target):] + [target] if target in path else [name, target]
                pytest.fail("import circle: " + " → ".join(circle))
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def _calls(tree: ast.AST) -> set[str]:
    """Dotted names of everything called in a module, e.g. ``print`` or ``sys.exit``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func, parts = node.func, []
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                found.add(".".join([func.id, *reversed(parts)]))
    return found


@pytest.mark.parametrize("module", sorted(name for name in MODULES if _part(name) not in ALLOWED_TO_PRINT))
def test_only_the_command_line_prints_or_exits(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    calls = _calls(tree)
    forbidden = sorted(calls & {"print", "sys.exit", "exit", "quit", "typer.Exit", "os._exit"})
    imports_typer = any(isinstance(n, (ast.Import, ast.ImportFrom)) and "typer" in ast.dump(n) for n in ast.walk(tree))
    assert not forbidden and not imports_typer, f"gptiny_cli.{module} calls {forbidden or 'typer'}"
