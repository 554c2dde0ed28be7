"""The package's shape: the layers contract in pyproject.toml holds, no import cycle, no long module.

The layering (pyproject.toml, [tool.importlinter]) is checked by import-linter itself; cycles are
found on grimp's graph of lambdatrain/, which holds every import statement of a module, those
inside functions and under TYPE_CHECKING included (an import hidden in a function is still a
dependency, and a cycle through one is still a cycle).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "lambdatrain"
MAX_LINES = 300  # the house style: files under about 300 lines, each split along a real seam
LONG_MODULE_FOLDERS = ("lambdatrain", "components")


def _layers() -> list[str]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in contract["layers"] for name in layer.split("|")]


def test_layers_contract_is_kept(capsys):
    configuration.configure()  # what the lint-imports command does first: its readers, its graph builder
    kept = lint_imports(config_filename=str(REPO_ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)
    assert kept, capsys.readouterr().out


def test_every_package_is_in_a_layer():
    # A new package outside the contract would be free to import anything.
    top = {f"{PACKAGE}.{p.name}" for p in (REPO_ROOT / PACKAGE).iterdir() if (p / "__init__.py").is_file()}
    top |= {f"{PACKAGE}.{p.stem}" for p in (REPO_ROOT / PACKAGE).glob("*.py")}
    # __init__ holds no imports; __main__ is `python -m lambdatrain`, the CLI's twin above every layer.
    top -= {f"{PACKAGE}.__init__", f"{PACKAGE}.__main__"}
    assert sorted(top - set(_layers())) == []


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _chain(graph: grimp.ImportGraph, component: list[str]) -> str:
    a, b = component[0], component[1]
    there = graph.find_shortest_chain(importer=a, imported=b) or ()
    back = graph.find_shortest_chain(importer=b, imported=a) or ()
    return " -> ".join([*there, *back[1:]])


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    cycles = [_chain(graph, c) for c in _cycles(graph)]
    assert cycles == [], "import cycles (each shown as one loop):\n" + "\n".join(cycles)


def test_the_cycle_finder_finds_a_loop_hidden_in_a_function():
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b", line_number=1, line_contents="import p.b")
    graph.add_import(importer="p.b", imported="p.c", line_number=1, line_contents="import p.c")
    graph.add_import(importer="p.c", imported="p.a", line_number=9, line_contents="    from p import a")
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert _chain(graph, ["p.a", "p.b", "p.c"]) == "p.a -> p.b -> p.c -> p.a"


def test_no_module_is_over_300_lines():
    long = {str(path.relative_to(REPO_ROOT)): n for folder in LONG_MODULE_FOLDERS
            for path in sorted((REPO_ROOT / folder).rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines (split each along a real seam): {long}"


def test_readme_repository_map_names_every_package_and_only_those():
    # The README's map is the newcomer's first view of the layout: it must not drift from the tree.
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Repository"):]
    block = section[section.index("```"):section.index("```", section.index("```") + 3)]
    named = {line.split()[0].rstrip("/") for line in block.splitlines()[1:] if line.startswith("  ") and not line.startswith("   ")}
    packages = {p.name for p in (REPO_ROOT / PACKAGE).iterdir() if (p / "__init__.py").is_file()}
    modules = {p.name for p in (REPO_ROOT / PACKAGE).glob("*.py") if not p.name.startswith("__")}
    assert named == packages | modules
