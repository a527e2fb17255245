"""The layering the code keeps: data -> style -> recsys -> pipelines, no import cycles,
pipelines/ a thin CLI whose jobs do not borrow from each other, click only in the CLI.

Read from the source with ``ast`` (nothing is imported), so a violation fails here with
the file and the import that breaks the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("data", "style", "recsys", "pipelines")  # each may import only the ones before it
# pipelines modules that are the CLI's own small helpers, not jobs
PIPELINE_HELPERS = {"pipelines", "pipelines.env", "pipelines.common", "pipelines.workspace", "pipelines.tracking", "pipelines.mlflow_model", "pipelines.ranker_store"}
# the modules that may import a job's entry points: the CLI's registration of jobs, the demo
JOB_CALLERS = {"pipelines.cli", "pipelines.demo"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for type
    annotations only, never executed)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and (getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _is_module(root: Path, dotted: str) -> bool:
    path = root / Path(*dotted.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports at run time (at any depth of the file: top level or
    in functions); ``from package import module`` counts as importing the module."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names if _is_module(root, f"{target}.{alias.name}")}
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(target)
    return found


def project_modules(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the project modules it imports} over data/, style/, recsys/, pipelines/."""
    files = {module_name(p, root): p for layer in LAYERS for p in (root / layer).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in imports_of(path, root) if m in files and m != name}
    return graph


def layer_of(module: str) -> str:
    return module.split(".")[0]


def package_of(module: str, graph: dict[str, set[str]]) -> str:
    """The package a module belongs to (a package's own __init__ belongs to itself)."""
    return module if any(m.startswith(module + ".") for m in graph) else module.rpartition(".")[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules of one package (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if package_of(w, graph) != package_of(v, graph):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, imported in sorted(graph.items()):
        allowed = LAYERS[: LAYERS.index(layer_of(module)) + 1]
        out += [f"{module} imports {m} (a later stage)" for m in sorted(imported) if layer_of(m) not in allowed]
    return out


def job_violations(graph: dict[str, set[str]]) -> list[str]:
    """pipelines job modules importing another job (only the CLI and the demo may)."""
    jobs = {m for m in graph if layer_of(m) == "pipelines" and m not in PIPELINE_HELPERS}
    out = []
    for module in sorted(jobs - JOB_CALLERS):
        out += [f"{module} imports the job module {m}" for m in sorted(graph[module] & jobs)]
    return out


def click_violations(root: Path = ROOT) -> list[str]:
    out = []
    for layer in LAYERS[:-1]:
        for path in sorted((root / layer).rglob("*.py")):
            if any(m == "click" or m.startswith("click.") for m in imports_of(path, root)):
                out.append(f"{module_name(path, root)} imports click (only pipelines/ is a CLI)")
    return out


def violations(root: Path = ROOT) -> list[str]:
    graph = project_modules(root)
    found = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    return found + layer_violations(graph) + job_violations(graph) + click_violations(root)


def test_the_architecture_holds():
    assert violations() == []


# -- the checks catch what they are meant to catch ----------------------------------------


@pytest.fixture
def tree(tmp_path):
    """A copy of the four packages' sources to break on purpose."""
    import shutil

    for layer in LAYERS:
        shutil.copytree(ROOT / layer, tmp_path / layer, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert violations(tmp_path) == []
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


@pytest.mark.parametrize(
    ("file", "line", "expected"),
    [
        ("pipelines/workspace.py", "from pipelines import common", "import cycle"),
        ("recsys/metrics.py", "from recsys import evaluate", "import cycle"),
        ("pipelines/evaluate_job.py", "from pipelines.train_job import train_cmd", "imports the job module pipelines.train_job"),
        ("pipelines/ab_job.py", "from pipelines import candidates_job", "imports the job module pipelines.candidates_job"),
        ("data/io.py", "from style.space import l2_normalise", "data.io imports style.space (a later stage)"),
        ("style/space.py", "import recsys.metrics", "style.space imports recsys.metrics (a later stage)"),
        ("recsys/index.py", "from pipelines.tracking import CHAMPION_URI", "recsys.index imports pipelines.tracking (a later stage)"),
        ("recsys/serving.py", "import click", "recsys.serving imports click"),
    ],
)
def test_a_violation_fails(tree, file, line, expected):
    _append(tree / file, line)
    found = violations(tree)
    assert any(expected in v for v in found), found
