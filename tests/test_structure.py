"""The library's shape: its parts import each other one way only, and the light parts stay free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tunebench.config import ROOT

PACKAGE = ROOT / "src" / "tunebench"


def _grouping(folder: Path) -> bool:
    """A folder that only groups parts (its ``__init__`` holds nothing but a docstring)."""
    init = folder / "__init__.py"
    if not init.is_file():
        return False
    body = ast.parse(init.read_text(encoding="utf-8")).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


def _part(module: str) -> str | None:
    """The part of the library a dotted module name belongs to: a subpackage or a module, looked up below
    the folders that only group parts (``stages.evaluate``, ``stages.train.methods``, ``machinery.fit``)."""
    parts = module.split(".")
    if parts[0] != "tunebench":
        return None
    folder, depth = PACKAGE, 1
    while depth < len(parts):
        here = folder / parts[depth]
        if not (here.is_dir() or here.with_suffix(".py").is_file()):
            return None
        if not _grouping(here):
            return ".".join(parts[1 : depth + 1])
        folder, depth = here, depth + 1
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
    assert "util.fileio" in graph["tasks"] and "tasks" in graph["stages.evaluate"] and "config" in graph["results"]
    assert "stages.formats" in graph["stages.train.wrap"] and "config" in graph["machinery.fit"]
    assert "config" not in graph["tasks"] and "results" not in graph.get("stages.evaluate", {})


def test_the_top_level_of_the_package_is_a_short_table_of_contents():
    """A newcomer reads at most ten entries to find where a change goes (caches and bytecode aside)."""
    entries = sorted(path.name for path in PACKAGE.iterdir() if path.name != "__pycache__")
    assert len(entries) <= 10, entries


def test_scoring_tasks_and_results_import_no_torch():
    """The scorers, the task modules and the whole results stage run where torch is absent or slow to load."""
    code = (
        "import sys\n"
        "import tunebench.tasks.scoring, tunebench.tasks, tunebench.results\n"
        "from tunebench import tasks\n"
        "for name in tasks.built_in():\n"
        "    tasks.get(name)\n"
        "import tunebench.results.aggregate, tunebench.results.claims, tunebench.results.figures\n"
        "import tunebench.results.paper, tunebench.results.tables, tunebench.results.published\n"
        "import tunebench.tasks.scoring.sql, tunebench.tasks.scoring.viggo, tunebench.tasks.scoring.gsm8k\n"
        "import tunebench.tasks.scoring.multiplication\n"
        "loaded = sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=Path.cwd())
    assert result.returncode == 0, result.stderr[-2000:]


def _schema_defaults() -> dict[str, list]:
    """Every key of the config schema (the methods' sections included) with the defaults it is given."""
    from tunebench import config as tb_config

    found: dict[str, list] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and "default" in sub:
                    found.setdefault(name, []).append(sub["default"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tb_config._schema())
    return found


def test_no_code_restates_a_default_the_schema_fills():
    """A validated config holds every default, so ``section.get("seed", 42)`` is a second home of the seed's
    default that silently disagrees once the schema changes: code indexes the key instead."""
    defaults = _schema_defaults()
    restated = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"):
                continue
            if len(node.args) != 2 or not isinstance(node.args[0], ast.Constant):
                continue
            try:
                fallback = ast.literal_eval(node.args[1])
            except ValueError:
                continue
            if any(fallback == value and fallback is not None for value in defaults.get(node.args[0].value, [])):
                restated.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .get({node.args[0].value!r}, {fallback!r})")
    assert "seed" in defaults and "max_new_tokens" in defaults  # the walk reaches the schema's keys
    assert not restated, restated


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
    assert importers == {"machinery/bench_peers.py"}
