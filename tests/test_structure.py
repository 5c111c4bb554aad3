"""The library's shape: its parts import each other one way only, and the light parts stay free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tunebench.config import ROOT

PACKAGE = ROOT / "src" / "tunebench"


def _part(module: str) -> str | None:
    """The part of the library a dotted module name belongs to: a subpackage, or a top-level module."""
    parts = module.split(".")
    if parts[0] != "tunebench" or len(parts) < 2:
        return None
    if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file():
        return parts[1]
    return None


def import_graph() -> dict[str, dict[str, str]]:
    """Part -> {imported part: where}, from every import statement (those inside functions too)."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        source = _part(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from . import data` names a module; `from .config import X` names one through its base.
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _part(name)
                if source and target and target != source:
                    graph.setdefault(source, {}).setdefault(target, f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return graph


def test_the_parts_of_the_library_import_each_other_without_a_cycle():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(part: str, trail: list[str]) -> None:
        state[part] = "open"
        for target, where in graph.get(part, {}).items():
            if state.get(target) == "open":
                cycle = trail[trail.index(target) :] + [part, target] if target in trail else [part, target]
                raise AssertionError(f"import cycle {' -> '.join(cycle)} (closed at {where})")
            if target not in state:
                visit(target, trail + [part])
        state[part] = "done"

    for part in sorted(graph):
        if part not in state:
            visit(part, [])


def test_the_graph_sees_the_imports_it_should():
    """A guard on the test itself: a known edge each way of the layering is found."""
    graph = import_graph()
    assert "data" in graph["tasks"] and "tasks" in graph["evaluate"] and "config" in graph["results"]
    assert "tasks" not in graph["data"] and "results" not in graph.get("evaluate", {})


def test_scoring_tasks_and_results_import_no_torch():
    """The scorers, the task modules and the whole results stage run where torch is absent or slow to load."""
    code = (
        "import sys\n"
        "import tunebench.scoring, tunebench.tasks, tunebench.results\n"
        "from tunebench import tasks\n"
        "for name in tasks.NAMES:\n"
        "    tasks.get(name)\n"
        "import tunebench.results.aggregate, tunebench.results.claims, tunebench.results.figures\n"
        "import tunebench.results.paper, tunebench.results.tables, tunebench.results.published\n"
        "import tunebench.scoring.sql, tunebench.scoring.viggo, tunebench.scoring.gsm8k\n"
        "import tunebench.scoring.multiplication\n"
        "loaded = sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=Path.cwd())
    assert result.returncode == 0, result.stderr[-2000:]


def test_only_the_peer_bench_imports_the_peers():
    """TRL and lm-evaluation-harness are what the bench measures against, never a dependency of a stage."""
    importers = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] in ("trl", "lm_eval") for name in names):
                importers.add(str(path.relative_to(PACKAGE)))
    assert importers == {"bench_peers.py"}
