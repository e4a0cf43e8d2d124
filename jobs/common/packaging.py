"""The files of the jobs package that some code needs: the closure of its imports.

What leaves the checkout -- the spark-submit --py-files zip (jobs/common/spark_submit.py),
the code logged with the served MLflow model (jobs/serving/register_and_gate.py) -- holds
only what its entry modules import, so a training loop or a developer tool never rides
along with a Spark stage or a served model.

The imports are read from the sources (their AST), never executed: `import jobs.x`,
`from jobs.x import y` (y a name or a submodule), relative imports, and imports inside
functions too, because the stages import lazily. Importing a module runs its packages'
__init__.py first, so those are part of the closure, their own imports included. Modules
outside the package (numpy, pyspark, ...) are the environment's business and are ignored.
Imports made from strings (importlib.import_module) are not seen; the package has none.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import shutil
from pathlib import Path
from typing import Collection, Iterator

JOBS_DIR = Path(__file__).resolve().parents[1]


def module_closure(entry_modules: list[str], package_root, skip_functions: Collection[str] = ()) -> list[Path]:
    """The .py files of the package at package_root that entry_modules import, transitively.

    package_root is the package's directory (its name is the package's name); entry
    modules are dotted names inside it. skip_functions holds qualified names
    (module.function) of functions whose imports are not followed: dispatch tables that
    import one of many modules on demand, whose every branch is not a dependency.
    Sorted by path inside the package's parent, so the same sources give the same list.
    """
    root = Path(package_root).resolve()
    pending = [(module, "entry modules") for module in entry_modules]
    files: dict[str, Path] = {}
    while pending:
        module, importer = pending.pop()
        if module in files:
            continue
        path = module_path(module, root)
        if path is None:
            raise ModuleNotFoundError(f"{importer}: no .py file of {module} under {root}")
        files[module] = path
        # A namespace package (a folder without __init__.py) has no file to ship.
        pending += [(package, str(path)) for package in parent_packages(module) if module_path(package, root)]
        pending += [(imported, str(path)) for imported in imported_modules(module, path, root, skip_functions)]
    return sorted(files.values(), key=lambda path: path.relative_to(root.parent).as_posix())


def module_path(module: str, root: Path) -> Path | None:
    """The file of dotted module (its __init__.py for a package) under root, or None."""
    package, *parts = module.split(".")
    if package != root.name:
        return None
    folder = root.joinpath(*parts)
    if (folder / "__init__.py").is_file():
        return folder / "__init__.py"
    single = folder.with_suffix(".py")
    return single if parts and single.is_file() else None


def parent_packages(module: str) -> list[str]:
    """The packages Python imports before module: jobs and jobs.etl for jobs.etl.clean."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def imported_modules(module: str, path: Path, root: Path, skip_functions: Collection[str] = ()) -> Iterator[str]:
    """The modules of the package that the source of module (at path) imports anywhere in it."""
    tree = parse_source(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _import_nodes(tree, module, set(skip_functions)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if _inside(alias.name, root))
            continue
        base = _absolute(node, package)
        if not _inside(base, root):
            continue
        yield base
        # `from jobs.etl import clean` imports the submodule clean; `from jobs.etl.clean import run`
        # a name, which has no file of its own.
        yield from (f"{base}.{alias.name}" for alias in node.names
                    if module_path(f"{base}.{alias.name}", root) is not None)


def parse_source(path: Path) -> ast.Module:
    """The AST of the file at path, parsed with the garbage collector paused.

    CPython 3.11 (3.11.7 here) keeps ast.parse's recursion depth in interpreter-wide state
    (python/cpython gh-106905). A collection during the parse can run a finalizer -- py4j's
    for a stopped SparkContext logs a traceback, and 3.11's traceback formatting calls
    ast.parse -- and the outer parse then fails with "SystemError: AST constructor recursion
    depth mismatch". No collection, no finalizer in the middle.
    """
    source = path.read_bytes()
    with _garbage_collector_paused():
        return ast.parse(source, filename=str(path))


@contextlib.contextmanager
def _garbage_collector_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def copy_closure(files: list[Path], package_root, dest) -> Path:
    """Copy files (from module_closure) to dest, keeping their paths inside the package;
    returns dest's copy of the package directory (dest/jobs)."""
    root = Path(package_root).resolve()
    for path in files:
        target = Path(dest) / path.relative_to(root.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return Path(dest) / root.name


def _import_nodes(node: ast.AST, qualified_name: str, skip_functions: set[str]) -> Iterator[ast.stmt]:
    """Every import statement under node, function and class bodies included, except in the
    bodies of skip_functions (qualified_name is node's: module, module.function, ...)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            child_name = f"{qualified_name}.{child.name}"
            if child_name not in skip_functions:
                yield from _import_nodes(child, child_name, skip_functions)
        else:
            yield from _import_nodes(child, qualified_name, skip_functions)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` reads from, relative imports resolved against package."""
    if not node.level:
        return node.module
    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{anchor}.{node.module}" if node.module else anchor


def _inside(module: str, root: Path) -> bool:
    return module == root.name or module.startswith(f"{root.name}.")
