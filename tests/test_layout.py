"""The package's shape: layers without cycles, one console, typed public API, docstrings pointing at docs/.

The one-way direction of imports between layers is enforced by import-linter contracts
(`pyproject.toml`, run by `lint-imports` in `.ci/run`); this file checks what those contracts do not."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

PKG = Path(__file__).parents[1] / "uhd_profile"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """uhd_profile modules imported anywhere in ``path`` (module level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uhd_profile"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("uhd_profile"))
    return out


def test_no_import_cycles_between_modules():
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    # the package __init__ files re-export; a cycle through them is not a real dependency cycle
    graph = {k: {m for m in v if not (PKG / Path(*m.split(".")[1:]) / "__init__.py").exists()} for k, v in graph.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_one_console_module():
    """Only uhd_profile/cli/console.py makes rich consoles; commands are registered in cli/main.py."""
    makers = [p for p in PKG.rglob("*.py") if "Console(" in p.read_text() and p.name != "console.py"]
    assert not makers, makers
    main = (PKG / "cli" / "main.py").read_text()
    assert "cli.add_command" in main and "COMMANDS" in main


def test_no_docstring_points_outside_the_repository():
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        assert "../shared" not in text and "paper-spec" not in text, p


@pytest.mark.parametrize("name", ["count_flops", "build_variant", "load", "bench", "write_report", "VariantSpec.from_dict"])
def test_public_api_is_fully_annotated(name):
    import uhd_profile

    obj = uhd_profile
    for part in name.split("."):
        obj = getattr(obj, part)
    sig = inspect.signature(obj)
    missing = [p for p, v in sig.parameters.items() if v.annotation is inspect.Parameter.empty and p not in ("self", "cls")]
    assert not missing and sig.return_annotation is not inspect.Signature.empty, (name, missing)
