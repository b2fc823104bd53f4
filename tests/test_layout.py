"""The import graph of the package: no circles, layers that only import downwards, no source-tree
imports, and scripts that run without editing ``sys.path``. Read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "avss_sdk"
SCRIPT_FOLDERS = ("train", "export", "samples", "benchmarks", "kernels")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_package_has_no_import_circle(graph):
    # A package's __init__ may re-export its modules; a circle through one is not a circle of modules.
    modules = {name: {m for m in deps if not (PACKAGE.parent / m.replace(".", "/") / "__init__.py").is_file()}
               for name, deps in graph.items()}
    assert _cycle(modules) is None, " -> ".join(_cycle(modules))


def test_a_cycle_is_found_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_modeling_and_data_import_nothing_from_runtime(graph):
    for name, deps in graph.items():
        if name.startswith(("avss_sdk.modeling", "avss_sdk.data")):
            assert not any(d.startswith("avss_sdk.runtime") for d in deps), f"{name} imports {sorted(deps)}"


def test_tensorrt_builder_and_runner_share_one_helpers_module(graph):
    assert "avss_sdk.runtime.tensorrt_backend" not in graph["avss_sdk.runtime.tensorrt_build"]
    assert "avss_sdk.runtime.tensorrt_build" not in graph["avss_sdk.runtime.tensorrt_backend"]
    for name in ("avss_sdk.runtime.tensorrt_build", "avss_sdk.runtime.tensorrt_backend"):
        assert "avss_sdk.runtime.tensorrt_common" in graph[name]


def test_the_package_imports_nothing_from_the_source_tree():
    for path in PACKAGE.rglob("*.py"):
        outside = {m for m in _imports(path) if m.split(".")[0] in SCRIPT_FOLDERS + ("tests",)}
        assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)} (not installed with the package)"


def test_scripts_do_not_edit_sys_path():
    for folder in SCRIPT_FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            uses = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
                    and isinstance(n.value, ast.Name) and n.value.id == "sys"]
            assert not uses, f"{path.relative_to(ROOT)} uses sys.path (line {uses[0] if uses else ''})"
