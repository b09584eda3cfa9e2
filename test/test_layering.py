"""Arrows point down the flow (docs/architecture.md): every module of xkd_ros has a level, and imports only
modules of a lower level, or of its own package at the same level; nothing imports in a circle; and the core
(everything whose purpose is neither ROS nor training) loads neither rclpy nor torch when imported.

The imports are read from the source with ast: those at the top of a file and those inside functions alike (a
lazy import is still an arrow, it only runs later), relative ones resolved. Imports under `if TYPE_CHECKING:`
count for the levels (a type named from above is an arrow up all the same) but not for cycles: they never run.

test_install.py complements this: it checks that the runtime tools load no *offline* module and that the
optional backends are imported only where asked for; here it is the level of every import, and rclpy and torch
kept out of the core.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "xkd_ros"

# The level of every module: "name" is that module alone, "name.*" a package and all its modules (unless
# a module of it has an entry of its own). Design layers (issue 15) in the comments; a layer whose modules
# import one another is split in steps, so that every import goes strictly down. A new module needs a line.
LEVELS = {
    # foundation: plain Python and numpy
    "xkd_ros": 0,  # the package: a docstring and __version__
    "xkd_ros.paths": 0,  # where the installed config/ and models/ are
    "xkd_ros.memory": 0,
    "xkd_ros.overlap": 0,
    "xkd_ros.sync": 0,
    "xkd_ros.classes": 1,  # reads its class-set tables through paths
    "xkd_ros.ros_env": 1,  # reads the DDS profile through paths
    "xkd_ros.metrics": 2,  # scores by class set
    # geometry
    "xkd_ros.geometry.*": 3,
    # ROS messages as numpy (no rclpy), parameter schema
    "xkd_ros.msgs.*": 4,
    "xkd_ros.parameters": 4,
    # datasets as Frames, bags, synthetic drives
    "xkd_ros.data.*": 5,
    "xkd_ros.preprocess": 6,
    # the network (torch)
    "xkd_ros.model.*": 7,
    # inference backends, ONNX metadata
    "xkd_ros.inference.*": 8,
    "xkd_ros.pipeline": 9,
    # offline tools and the ROS-free pieces of the apps
    "xkd_ros.export": 10,
    "xkd_ros.quantize": 10,
    "xkd_ros.calibration": 10,
    "xkd_ros.evaluate": 10,  # the package: a docstring, no imports
    "xkd_ros.evaluate.scoring": 10,
    "xkd_ros.evaluate.report": 10,
    "xkd_ros.labeller": 10,
    "xkd_ros.viewers": 10,
    "xkd_ros.session": 10,
    "xkd_ros.projection_demo": 10,
    "xkd_ros.train.*": 11,  # train.cli exports the trained checkpoint
    "xkd_ros.launch_plan": 11,  # names the viewers' topics
    # ROS glue and apps (rclpy)
    "xkd_ros.replay": 12,
    "xkd_ros.message_filters": 12,
    "xkd_ros.node_parameters": 12,
    "xkd_ros.record": 13,  # replay's message types
    "xkd_ros.node": 13,  # labeller + node_parameters
    "xkd_ros.evaluate.live": 14,  # records with record
    "xkd_ros.evaluate.cli": 15,
    "xkd_ros.demo": 15,
}
# Modules whose purpose is ROS or training: they may load rclpy or torch when imported (issue 15 design).
ROS_PURPOSE = (
    "xkd_ros.node",
    "xkd_ros.node_parameters",
    "xkd_ros.replay",
    "xkd_ros.record",
    "xkd_ros.message_filters",
    "xkd_ros.evaluate.live",
    "xkd_ros.evaluate.cli",
    "xkd_ros.demo",
)
TRAINING_PURPOSE = ("xkd_ros.model.*", "xkd_ros.train.*", "xkd_ros.export", "xkd_ros.inference.torch")
FORBIDDEN_IN_CORE = ("rclpy", "torch")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _entry(module: str, table) -> str | None:
    """The entry of `table` that covers `module`: its own, else the innermost package's listed with .*"""
    if module in table:
        return module
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) + ".*" in table:
            return ".".join(parts[:end]) + ".*"
    return None


def _level(module: str) -> int:
    return LEVELS[_entry(module, LEVELS)]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module imported (for `from m import name`, m.name when that is a module)
    line: int
    type_checking: bool

    def where(self) -> str:
        return f"{MODULES[self.source].relative_to(REPO)}:{self.line}"


def _targets(source: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:  # relative: from the package of the importing file, one package up per extra dot
        package = source.split(".") if _is_package(source) else source.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _imports(source: str) -> list[Import]:
    tree = ast.parse(MODULES[source].read_text(), str(MODULES[source]))
    found = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(source, node):
                if target.split(".")[0] != "xkd_ros":
                    continue
                while target not in MODULES:  # a name of a module that does not exist: its package
                    target = target.rpartition(".")[0]
                if target != source:
                    found.append(Import(source, target, node.lineno, type_checking))
        for child in ast.iter_child_nodes(node):
            guarded = (
                isinstance(node, ast.If) and child in node.body and "TYPE_CHECKING" in ast.unparse(node.test)
            )
            visit(child, type_checking or guarded)

    visit(tree, False)
    return found


IMPORTS = [i for module in MODULES for i in _imports(module)]


def _same_package(a: str, b: str) -> bool:
    """Both in the same subpackage of xkd_ros (xkd_ros.data.synthetic.scene and xkd_ros.data.frame are)."""
    pa, pb = a.split("."), b.split(".")
    return len(pa) > 1 and len(pb) > 1 and pa[1] == pb[1] and _is_package(f"xkd_ros.{pa[1]}")


def test_every_module_has_a_level():
    missing = [MODULES[m].relative_to(REPO) for m in MODULES if _entry(m, LEVELS) is None]
    assert not missing, f"modules without a level: add them to LEVELS in test/test_layering.py: {missing}"


def test_every_level_entry_names_modules_that_exist():
    stale = [e for e in LEVELS if not any(_entry(m, LEVELS) == e for m in MODULES)]
    assert not stale, f"LEVELS in test/test_layering.py lists modules that do not exist: {stale}"


def test_every_import_goes_down_the_levels():
    """(Modules without a level are test_every_module_has_a_level's failure; their imports are not judged.)"""
    upward = [
        f"{i.where()} ({i.source}, level {_level(i.source)}) imports {i.target} (level {_level(i.target)})"
        for i in IMPORTS
        if _entry(i.source, LEVELS)
        and _entry(i.target, LEVELS)
        and not (
            _level(i.target) < _level(i.source)
            or (_level(i.target) == _level(i.source) and _same_package(i.source, i.target))
        )
    ]
    assert not upward, "imports that do not go to a lower level:\n" + "\n".join(upward)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [_cycle_in(component, edges) for component in components]


def _cycle_in(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """One cycle within a strongly connected component: walk from its first module until a module repeats."""
    path = [min(component)]
    while True:
        step = min(w for w in edges[path[-1]] if w in component)
        if step in path:
            return [*path[path.index(step) :], step]
        path.append(step)


def test_no_import_cycles():
    edges: dict[str, set[str]] = {}
    lines = {}
    for i in IMPORTS:
        if not i.type_checking:
            edges.setdefault(i.source, set()).add(i.target)
            lines.setdefault((i.source, i.target), i.where())
    cycles = _cycles(edges)
    described = [
        " -> ".join(cycle) + "  (" + ", ".join(lines[a, b] for a, b in itertools.pairwise(cycle)) + ")"
        for cycle in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def _core_modules() -> list[str]:
    return [m for m in MODULES if _entry(m, dict.fromkeys(ROS_PURPOSE + TRAINING_PURPOSE)) is None]


def _loaded_after_import(module: str) -> tuple[str, list[str]]:
    code = (
        f"import importlib, json, sys\nimportlib.import_module({module!r})\n"
        f"print(json.dumps([n for n in {FORBIDDEN_IN_CORE!r} if n in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        return module, [f"import failed: {result.stderr.strip().splitlines()[-1:]}"]
    return module, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(900)
def test_core_modules_load_neither_rclpy_nor_torch():
    """Each core module in an interpreter of its own: imported after another, a module that loads torch
    itself would pass unseen if the other had loaded it already, and the failure would name the wrong module
    (sys.modules only grows; a module cannot be unloaded). About 60 interpreters, each 0.1-0.5 s, run as many
    at a time as there are CPUs: 15 s in all on two busy cores."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(pool.map(_loaded_after_import, _core_modules()))
    loaded = {module: names for module, names in results.items() if names}
    assert not loaded, (
        "core modules (neither ROS nor training is their purpose) that load these when imported: "
        + json.dumps(loaded, indent=1)
    )


def _map_entries() -> set[str]:
    """The first `name` of each list item in docs/architecture.md's module map."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = re.search(r"^## Module map\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, "docs/architecture.md: no '## Module map' section"
    return set(re.findall(r"^- `([^`]+)`", section.group(1), re.MULTILINE))


def _doc_name(module: str) -> str:
    """How the module map names a module: its path under xkd_ros/, a package as its folder."""
    path = MODULES[module].relative_to(PACKAGE)
    return "xkd_ros/" if module == "xkd_ros" else (f"{path.parent}/" if _is_package(module) else str(path))


def test_architecture_doc_lists_every_module():
    listed, modules = _map_entries(), {_doc_name(m) for m in MODULES}
    assert not modules - listed, (
        f"docs/architecture.md: modules missing from the map: {sorted(modules - listed)}"
    )
    assert not listed - modules, (
        f"docs/architecture.md: the map lists modules that do not exist: {sorted(listed - modules)}"
    )
