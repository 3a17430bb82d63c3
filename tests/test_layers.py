"""Imports point one way: down the layers below, and never in a cycle.

The test reads every module of ``prunebench/``, ``methods/`` (installed as ``prunebench.methods``) and ``suites/``
(installed as ``prunebench.suites``) with :mod:`ast`, collects its imports of package modules -- at module level
AND inside functions -- and fails on

* an import cycle among the modules (an import placed inside a function still counts: it runs, and hiding a
  cycle there is what this test exists to prevent);
* an import from a lower layer into a higher one (imports inside one layer are fine as long as they make no
  cycle).

Not counted: imports under ``if TYPE_CHECKING:`` (they never run; annotations only), and the root package
``prunebench`` itself (its ``__init__`` is the public facade that re-exports the layers below it; it is loaded
before any submodule, and ``from prunebench import __version__`` reads a constant).

Layers, top to bottom (a module may import from its own layer and any layer below). Patterns are
:mod:`fnmatch` patterns of dotted module names; the first layer with a matching pattern wins, so a new module
``prunebench/x.py`` only needs its name added to the right tuple (``engine.*`` and ``methods.*`` already match
whatever modules those packages grow).
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, ...], ...] = (
    # 0. command lines: the top-level CLI, its subcommands, each package's cli module
    ("prunebench.cli", "prunebench.__main__", "prunebench.commands", "prunebench.*.cli", "prunebench.profile"),
    # 1. sweeps: planning, measuring, running and recording cells
    ("prunebench.runner", "prunebench.runner.*"),
    # 2. the lmms-eval model (the only module, besides the sweep's evaluation step, that imports lmms_eval)
    ("prunebench.lmms",),
    # 3. what the lmms-eval model and the runner build on: resolution and the cell spec, model loading and inputs,
    #    the conformance kit, training, the toy model, reports, suites, fingerprints
    (
        "prunebench.resolve",
        "prunebench.spec",
        "prunebench.models",
        "prunebench.models.*",
        "prunebench.conformance",
        "prunebench.conformance_*",
        "prunebench.training",
        "prunebench.toy",
        "prunebench.toy.*",
        "prunebench.report",
        "prunebench.report.*",
        "prunebench.suites",
        "prunebench.suites.*",
        "prunebench.fingerprint",
    ),
    # 4. the pruning engine, and cost accounting (which runs the engine under a FLOP counter)
    ("prunebench.engine", "prunebench.engine.*", "prunebench.costs"),
    # 5. model adapters, methods (and LearnPruner's learned module, which a method loads) and the registry that finds them
    ("prunebench.adapters", "prunebench.adapters.*", "prunebench.methods", "prunebench.methods.*", "prunebench.lpm", "prunebench.registry"),
    # 6. the bottom: scored method bases, views of tokens and attention, the method contract, the results store,
    #    (its records and run-folder lock), the versions of the code and the state of the machine
    (
        "prunebench.bases",
        "prunebench.views",
        "prunebench.attention",
        "prunebench.core",
        "prunebench.store",
        "prunebench.records",
        "prunebench.runlock",
        "prunebench.environment",
    ),
)


def _module_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for folder, package in (("prunebench", "prunebench"), ("methods", "prunebench.methods"), ("suites", "prunebench.suites")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(p.startswith(".") or p == "data" for p in parts):
                continue
            files[".".join([package, *parts])] = path
    return files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: set[str]) -> dict[str, int]:
    """Package modules ``module`` imports (module level and in functions), each with the line of its first import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in known:  # `import a.b.c` of a name inside a module: the module
            target = target.rpartition(".")[0]
        if target and target != "prunebench" and target != module:
            found.setdefault(target, line)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child.lineno)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in known else base, child.lineno)
            visit(child)

    visit(tree)
    return found


def _layer(module: str) -> int:
    for index, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to the tuple of its layer")


def _graph() -> dict[str, dict[str, int]]:
    files = _module_files()
    known = set(files)
    return {module: _imports(module, path, known) for module, path in files.items() if module != "prunebench"}


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_imports_point_down():
    upward = []
    for module, targets in _graph().items():
        for target, line in targets.items():
            if _layer(target) < _layer(module):
                upward.append(f"{module}:{line} imports {target} (layer {_layer(module)} -> {_layer(target)})")
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(sorted(upward))


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in graph:
                continue
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_cycles_and_upward_imports(tmp_path):
    """The checks can fail: a two-module cycle is found, and the layer of a made-up upward import is higher."""
    assert _cycles({"a": {"b": 1}, "b": {"a": 2}}) == [["a", "b"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []
    assert _layer("prunebench.core") > _layer("prunebench.runner.sweep") > _layer("prunebench.cli")
    assert _layer("prunebench.engine.lifecycle") == _layer("prunebench.engine") and _layer("prunebench.methods.anything") == _layer("prunebench.adapters.base")
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prunebench.runner import sweep\n"
        "def f():\n    from prunebench.lmms import PruneBenchLMM\n    from . import store\n"
    )
    known = {"prunebench.lmms", "prunebench.runner", "prunebench.runner.sweep", "prunebench.store", "prunebench.core"}
    assert _imports("prunebench.core", source, known) == {"prunebench.lmms": 6, "prunebench.store": 7}


HIDDEN_LMMS_EVAL = r"""
import importlib.abc, json, sys

class HideLmmsEval(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "lmms_eval" or name.startswith("lmms_eval."):
            raise ImportError(f"lmms_eval is hidden by the test ({name})")
        return None

sys.meta_path.insert(0, HideLmmsEval())
from prunebench.cli import main
from prunebench.report.example import write_example_store

run, dry = sys.argv[1], sys.argv[2]
write_example_store(run)
commands = {
    "run": ["run", "--dry-run", "--model", "tiny-llava", "--methods", "random", "--budgets", "32", "--limit", "2", "--output", dry],
    "status": ["status", run],
    "report": ["report", run],
    "plot": ["plot", run, "--formats", "png", "--dpi", "50"],
    "list": ["list"],
}
codes = {name: main(argv) for name, argv in commands.items()}
print("RESULT " + json.dumps({"codes": codes, "lmms_eval_loaded": sorted(m for m in sys.modules if m.startswith("lmms_eval"))}))
"""


def test_commands_that_do_not_evaluate_work_without_lmms_eval(tmp_path):
    """``run --dry-run``, ``status``, ``report``, ``plot`` and ``list`` on a prepared run folder, in a process where
    importing lmms_eval raises ImportError."""
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", HIDDEN_LMMS_EVAL, str(tmp_path / "run"), str(tmp_path / "dry")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["codes"] == {"run": 0, "status": 0, "report": 0, "plot": 0, "list": 0}, proc.stderr[-3000:]
    assert result["lmms_eval_loaded"] == []
    assert "random@32" in proc.stdout and not (tmp_path / "dry").exists(), "the dry run lists the cells and writes nothing"
    assert list((tmp_path / "run" / "plots").glob("*.png")), "plot drew its figures"
