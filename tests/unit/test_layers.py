"""Imports run one way (DESIGN.md): text/audio at the bottom; model, serve, deploy and config never
import train; smart_tuner never imports train or model (it reaches a trainer through TrainerAdapter);
and no module imports itself back through others. Every import counts, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ttsops"

# (importer prefix, forbidden prefixes): "ttsops.config" is the module or the package of that name
RULES = [
    ("ttsops.model", ("ttsops.train",)),
    ("ttsops.serve", ("ttsops.train",)),
    ("ttsops.deploy", ("ttsops.train",)),
    ("ttsops.config", ("ttsops.train",)),
    ("ttsops.text", ("ttsops.train", "ttsops.model", "ttsops.audio", "ttsops.data")),
    ("ttsops.audio", ("ttsops.train", "ttsops.model", "ttsops.text", "ttsops.data")),
    ("ttsops.infra", ("ttsops.train", "ttsops.model", "ttsops.smart_tuner", "ttsops.serve", "ttsops.data")),
    ("ttsops.smart_tuner", ("ttsops.train", "ttsops.model")),
]


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, modules: set[str]) -> set[str]:
    """The package's modules that ``source`` imports (``from a import b``: ``a.b`` if it is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "ttsops")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ttsops":
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            out.update(subs or {node.module})
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    return {name: imports_of(p.read_text(), set(files)) for name, p in files.items()}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{mod} imports {dep}"
        for mod, deps in graph.items()
        for importer, forbidden in RULES
        if _under(mod, importer)
        for dep in deps
        if any(_under(dep, f) for f in forbidden)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once (as the path that closes it), found by depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                found.append(path[path.index(d) :] + [d])
            elif d in graph and d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def readme_packages(readme: str) -> set[str]:
    """The packages the README's layout map names (``  name/`` lines under ``ttsops/``, nested by indent)."""
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    names: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        entry = line.split()[0] if line.strip() else ""
        indent = len(line) - len(line.lstrip())
        if not entry.endswith("/") or indent == 0:
            stack = [] if indent == 0 else stack
            continue
        stack = [(i, n) for i, n in stack if i < indent] + [(indent, entry.rstrip("/"))]
        names.add(".".join(n for _, n in stack))
    return names


def test_the_readme_layout_names_every_package_and_no_other():
    packages = {module_name(p, PACKAGE).removeprefix("ttsops.") for p in PACKAGE.rglob("__init__.py")} - {"ttsops"}
    assert readme_packages((PACKAGE.parent / "README.md").read_text()) == packages


def test_no_module_imports_against_the_layers():
    assert violations(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("graph", "bad"),
    [
        ({"ttsops.model.inference": {"ttsops.train.checkpoint"}}, ["ttsops.model.inference imports ttsops.train.checkpoint"]),
        ({"ttsops.config": {"ttsops.train.hparams"}}, ["ttsops.config imports ttsops.train.hparams"]),
        ({"ttsops.smart_tuner.search.x": {"ttsops.model"}}, ["ttsops.smart_tuner.search.x imports ttsops.model"]),
        ({"ttsops.train.adapter": {"ttsops.smart_tuner.trainer.adapter"}}, []),
        ({"ttsops.configx": {"ttsops.train"}}, []),  # a prefix is a whole name
    ],
)
def test_the_rules_catch_what_they_name(graph, bad):
    assert violations(graph) == bad


def test_the_cycle_search_finds_a_cycle_through_a_function_level_import():
    src = "def f():\n    from ttsops.b import g\n"
    graph = {"ttsops.a": imports_of(src, {"ttsops.a", "ttsops.b"}), "ttsops.b": {"ttsops.a"}}
    assert cycles(graph) == [["ttsops.a", "ttsops.b", "ttsops.a"]]


def test_modules_functions_and_folders_stay_small():
    """STYLE.md: modules under ~400 lines, functions under ~50, no flat folder over ~12 modules."""
    big = []
    for p in PACKAGE.rglob("*.py"):
        src = p.read_text()
        if len(src.splitlines()) > 400:
            big.append(f"{p.relative_to(PACKAGE)}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50:
                big.append(f"{p.relative_to(PACKAGE)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    for d in {p.parent for p in PACKAGE.rglob("*.py")}:
        modules = [m for m in d.glob("*.py") if m.name != "__init__.py"]
        if len(modules) > 12:
            big.append(f"{d.relative_to(PACKAGE.parent)}/: {len(modules)} modules")
    assert big == []
