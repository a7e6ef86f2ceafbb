"""The package's structure: dependencies run one way, and modules stay small with one job each.

`datagen` uses `chainnet`; nothing in `chainnet` imports `datagen` or a command module; no module
imports another's private names; no import of our own code hides inside a function.
"""

import ast
import subprocess
import sys

from tests_helpers import ROOT

PACKAGES = ("chainnet", "datagen")
# Imports of our own code inside a function, each for a reason that is not a cycle.
LAZY = {
    ("chainnet/__init__.py", "chainnet.learn.surrogate"): "`import chainnet` stays free of torch",
    ("chainnet/sim/__init__.py", "chainnet.sim.fast"): "numba loads on first use of the engine",
    (
        "chainnet/optim/scorers.py",
        "chainnet.optim.batch_graphs",
    ): "a simulator search needs no torch",
}
# `python -m chainnet.simulate|score|optimize|profile`: entry points that only call main.
SHIMS = ("chainnet/simulate.py", "chainnet/score.py", "chainnet/optimize.py", "chainnet/profile.py")
# The numba event loop is one function on purpose (a compiled kernel): the only long one.
LONG_FUNCTIONS = {("chainnet/sim/kernel.py", "advance")}


def sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text())


def module_of(rel: str) -> str:
    return rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def imports(tree):
    """(module imported, names, whether inside a function) for every import statement."""
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, [], in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                out.append((child.module, [a.name for a in child.names], in_function))
            visit(child, inside)

    visit(tree, False)
    return out


def ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def test_the_library_imports_no_generation_app_and_no_command():
    """In a fresh interpreter, the library's packages and its search and scoring modules load no
    `datagen` module and no command (every module is also checked by its imports, below)."""
    modules = ["chainnet", "chainnet.learn", "chainnet.optim", "chainnet.optim.search"]
    modules += ["chainnet.optim.scorers", "chainnet.dataset.store", "chainnet.sim"]
    code = (
        f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'datagen' "
        "or n.startswith('chainnet.cli')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_dependencies_run_one_way_and_no_private_name_crosses_a_module():
    problems = []
    for rel, tree in sources():
        me = module_of(rel)
        library = rel.startswith("chainnet/") and not rel.startswith("chainnet/cli/")
        library = library and rel not in SHIMS
        for module, names, in_function in imports(tree):
            if not ours(module):
                continue
            if rel.startswith("chainnet/") and module.split(".")[0] == "datagen":
                problems.append(f"{rel} imports {module}")
            if library and module.startswith("chainnet.cli"):
                problems.append(f"{rel} (library) imports the command module {module}")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and module != me:
                problems.append(f"{rel} imports private {private} from {module}")
            if in_function and (rel, module) not in LAZY:
                problems.append(f"{rel} imports {module} inside a function")
    assert problems == []


def test_modules_are_short_and_say_their_job():
    problems = []
    for rel, tree in sources():
        lines = len((ROOT / rel).read_text().splitlines())
        if lines > 400:
            problems.append(f"{rel}: {lines} lines")
        if not ast.get_docstring(tree):
            problems.append(f"{rel}: no module docstring")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80 and (rel, node.name) not in LONG_FUNCTIONS:
                    problems.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert problems == []
