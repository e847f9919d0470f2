"""Dependencies point one way: webapp -> annotation -> (generation_workers, dpo launch) -> model.

Read from the source (every ``import`` statement, module level or inside a function: a lazy import that hides a
cycle is still a cycle): the domain never imports the workers or the trainer's internals (it sends jobs by task name,
``annotation/services/dispatch.py``; it may validate a trainer config with ``dpo.config``); ``model/`` and ``dpo/``
import no Django and no app; ``model/layout.py`` imports no torch; and the app's modules import each other without
cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("annotation", "generation_workers", "webapp", "model", "dpo")
# The one part of the trainer the domain may import: its torch-free config (validating a run before it is queued).
DPO_LAUNCH = {"dpo", "dpo.config", "dpo.reward_config"}  # torch-free: what the app validates a launch with


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" not in path.parts:
                out[_module_name(path)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (absolute names; ``from pkg import submodule`` counts as the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_domain_imports_neither_the_workers_nor_the_trainers_internals(graph):
    bad = sorted(
        (name, imported) for name, imports in graph.items() if _top(name) == "annotation" for imported in imports
        if _top(imported) == "generation_workers" or (_top(imported) == "dpo" and imported not in DPO_LAUNCH)
    )
    assert bad == [], "annotation/ must send jobs by name (annotation/services/dispatch.py), not import them"


def test_model_and_dpo_are_plain_pytorch_packages(graph):
    app = {"django", "celery", "annotation", "generation_workers", "webapp", "rest_framework"}
    bad = sorted((name, imported) for name, imports in graph.items() if _top(name) in ("model", "dpo")
                 for imported in imports if _top(imported) in app or (_top(name) == "model" and _top(imported) == "dpo"))
    assert bad == []


def test_model_layout_is_torch_free(graph):
    """The web app reads the layout: it (and what it imports from the repository) must not need torch."""
    seen, todo = set(), ["model.layout"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        heavy = sorted(i for i in graph[name] if _top(i) in ("torch", "safetensors", "transformers", "numpy"))
        assert heavy == [], f"{name} imports {heavy}"
        todo.extend(i for i in graph[name] if i in graph and i != "model")


def test_no_import_cycles_in_the_app(graph):
    """Tarjan's strongly connected components over annotation/ and generation_workers/ (package __init__ edges
    left out: importing a submodule runs its package's __init__, which here imports nothing of the app)."""
    nodes = [n for n in graph if _top(n) in ("annotation", "generation_workers")]
    edges = {n: sorted(i for i in graph[n] if i in graph and i in nodes and i != n and i != n.rpartition(".")[0])
             for n in nodes}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                cycles.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_check_sees_a_lazy_import(tmp_path):
    """The reader finds imports inside functions (how the old cycles were hidden)."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from generation_workers.dispatch import generation_dispatch\n")
    assert _imports("annotation.services.m", path, set()) == {"generation_workers.dispatch"}
