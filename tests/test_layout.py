"""The package's layout holds: no import circle, and the seam at the bottom, importing nothing above it.

The imports are read from the source (every `import` and `from ... import`, at
any depth of a module, type-checking ones included), so a circle cannot hide
behind a deferred import. A second check runs the import itself: importing a
generation's side of the seam loads no module above it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import BACKEND, backend_env, seam_modules

PACKAGE = Path(__file__).resolve().parent.parent / "rnn_state_rewriter"
NAME = PACKAGE.name
# The bottom layer: what the seam's modules may import of the package.
SEAM = {f"{NAME}.{module.removesuffix('/__init__').replace('/', '.')}" for module in seam_modules()}
BELOW_THE_SEAM = {f"{NAME}.generation", f"{NAME}.activations"}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """The package's modules a module imports: `from a import b` imports module `a.b` where there is one,
    else (a name defined in `a`) module `a`."""
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name for name in submodules if name in modules] or [node.module]
        else:
            continue
        found |= {name for name in names if name in modules}
    found.discard(module_name(path, root))
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(path, root): package_imports(path, root) for path in sorted(root.rglob("*.py"))}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_the_package_imports_have_no_circle():
    graph = import_graph()
    assert f"{NAME}.backend.keras3" in graph and graph[f"{NAME}.rewrite"], "the imports were not read"
    assert circles(graph) == []


def test_the_seam_imports_nothing_above_it():
    graph = import_graph()
    assert {f"{NAME}.backend.keras3", f"{NAME}.backend.tf_keras"} < SEAM <= set(graph), "the seam was not read"
    for module in SEAM:
        assert graph[module] <= SEAM | BELOW_THE_SEAM, (module, graph[module] - SEAM - BELOW_THE_SEAM)


def test_the_layout_checks_see_what_they_look_for(tmp_path):
    """The circle finder finds one (a test that finds nothing cannot pass by reading nothing)."""
    package = tmp_path / NAME
    (package / "backend").mkdir(parents=True)
    (package / "a.py").write_text(f"from {NAME}.b import x\n")
    (package / "b.py").write_text(f"import {NAME}.backend\n")
    (package / "backend" / "__init__.py").write_text(f"if True:\n    from {NAME} import a\n")
    graph = import_graph(package)
    assert circles(graph) == [[f"{NAME}.a", f"{NAME}.b", f"{NAME}.backend"]]


@pytest.mark.parametrize("generation", ["keras3", "tf_keras"])
def test_importing_a_generations_seam_loads_nothing_above_it(generation):
    """With the registration hook out of the way, the seam's own imports load no layer, plan or rewrite."""
    if generation == "tf_keras" and BACKEND != "tensorflow":
        pytest.skip("tf-keras runs on TensorFlow")
    code = textwrap.dedent(
        f"""
        import sys
        from {NAME} import _registration
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _registration._AfterImport)]
        import {NAME}.backend.{generation}
        loaded = sorted(m for m in sys.modules if m.startswith("{NAME}."))
        print(loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=backend_env(BACKEND)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(ast.literal_eval(result.stdout.strip().splitlines()[-1]))
    assert f"{NAME}.backend.{generation}" in loaded
    assert loaded <= SEAM | BELOW_THE_SEAM | {f"{NAME}._registration"}, loaded - SEAM - BELOW_THE_SEAM


def test_every_subpackage_goes_into_the_wheel():
    """`pip install rnn-state-rewriter` (not editable) must install `backend/`, `layers/` and `cli/` too."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = config.get("packages")
    include = config.get("packages", {}).get("find", {}).get("include", []) if isinstance(listed, dict) else listed
    packages = {module_name(path.parent) for path in PACKAGE.rglob("__init__.py")}
    assert {f"{NAME}.backend", f"{NAME}.layers", f"{NAME}.cli"} <= packages
    missing = [name for name in packages if not any(fnmatch.fnmatchcase(name, pattern) for pattern in include)]
    assert missing == [], f"not in the wheel: {missing}"


# The functions that list what a model holds: its graph's calls, the layers of its tree, the places its
# attributes hold layers. Only the walk calls them (once per model, into its `Inventory`), the seam
# defines the first, and loading looks a saved file's places up in the object it rebuilds.
LISTING = {"call_sites", "layers_in_tree", "find_sites"}
MAY_LIST = {f"{NAME}.walk", *SEAM}
LOADING = {(f"{NAME}.surgery", "_check_sites")}


def listing_calls(path: Path) -> list[tuple[str, str, int]]:
    """`(function called, function calling it, line)` of every call of a listing function in a module."""
    found = []

    def visit(node: ast.AST, inside: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name if not inside else inside)
                continue
            if isinstance(child, ast.Call):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in LISTING:
                    found.append((name, inside, child.lineno))
            visit(child, inside)

    visit(ast.parse(path.read_text()), "")
    return found


def test_only_the_walk_lists_what_a_model_holds():
    misplaced = [
        f"{module_name(path)}:{line} {inside or '<module>'}() calls {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if module_name(path) not in MAY_LIST
        for name, inside, line in listing_calls(path)
        if (module_name(path), inside) not in LOADING
    ]
    assert not misplaced, "read the walk's record (walk.Inventory) instead:\n" + "\n".join(misplaced)


def test_the_listing_check_finds_a_call_outside_the_walk(tmp_path):
    """The check above can fail: a module of its own that lists a model's calls is caught."""
    package = tmp_path / NAME
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "reader.py").write_text("def read(adapter, model):\n    return adapter.call_sites(model)\n")
    assert listing_calls(package / "reader.py") == [("call_sites", "read", 2)]
