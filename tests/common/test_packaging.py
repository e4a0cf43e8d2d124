"""jobs/common/packaging.py: the closure of a module's imports, on a tiny hand-made package."""

import ast
import gc

import pytest

from jobs.common.packaging import JOBS_DIR, copy_closure, module_closure, parse_source

# pkg.a imports b lazily; b imports the submodule c.d by `from pkg.c import d` (and names from
# it, parenthesised); c's __init__ imports f; d imports relatively, one and two levels up.
# e and c.unused are never imported; numpy and os are not the package's.
TINY_PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/a.py": "import os\n\nimport numpy\n\n\ndef lazy():\n    from pkg import b\n    return b\n",
    "pkg/b.py": "from pkg.c import d\nfrom pkg.c.d import (helper,\n                      VALUE)\n",
    "pkg/c/__init__.py": "import pkg.f\n",
    "pkg/c/d.py": "from . import helper\nfrom ..g import VALUE\n",
    "pkg/c/helper.py": "",
    "pkg/c/unused.py": "import pkg.e\n",
    "pkg/e.py": "import pkg.a\n",
    "pkg/f.py": "",
    "pkg/g.py": "VALUE = 1\n",
    # Imports one of many modules on demand, besides one import of its own.
    "pkg/dispatch.py": ("from pkg import f\n\n\ndef pick(name):\n    if name == 'a':\n        from pkg import a\n"
                        "        return a\n    from pkg import e\n    return e\n"),
}


def write_package(root, files=TINY_PACKAGE):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def relative(paths, root):
    return [path.relative_to(root).as_posix() for path in paths]


def test_the_closure_follows_lazy_submodule_relative_and_package_init_imports(tmp_path):
    package = write_package(tmp_path)

    closure = module_closure(["pkg.a"], package)

    assert relative(closure, tmp_path) == ["pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c/__init__.py",
                                           "pkg/c/d.py", "pkg/c/helper.py", "pkg/f.py", "pkg/g.py"]


def test_the_closure_is_the_same_list_whatever_the_order_of_the_entries(tmp_path):
    package = write_package(tmp_path)

    assert module_closure(["pkg.g", "pkg.b"], package) == module_closure(["pkg.b", "pkg.g", "pkg.b"], package)
    assert relative(module_closure(["pkg.c.helper"], package), tmp_path) == [
        "pkg/__init__.py", "pkg/c/__init__.py", "pkg/c/helper.py", "pkg/f.py"]


def test_a_skipped_function_s_imports_are_not_followed_and_the_rest_of_its_module_is(tmp_path):
    package = write_package(tmp_path)

    skipped = module_closure(["pkg.dispatch"], package, skip_functions=["pkg.dispatch.pick"])

    assert relative(skipped, tmp_path) == ["pkg/__init__.py", "pkg/dispatch.py", "pkg/f.py"]
    followed = relative(module_closure(["pkg.dispatch"], package), tmp_path)
    assert {"pkg/a.py", "pkg/e.py", "pkg/c/d.py"} <= set(followed)


def test_an_import_of_a_missing_module_is_named_with_its_importer(tmp_path):
    package = write_package(tmp_path, {**TINY_PACKAGE, "pkg/b.py": "def later():\n    import pkg.gone\n"})

    with pytest.raises(ModuleNotFoundError, match=r"pkg/b\.py: no \.py file of pkg\.gone under"):
        module_closure(["pkg.a"], package)
    with pytest.raises(ModuleNotFoundError, match="entry modules: no .py file of pkg.nowhere"):
        module_closure(["pkg.nowhere"], package)


def test_copy_closure_rebuilds_the_package_tree_with_only_the_closure(tmp_path):
    package = write_package(tmp_path / "src")

    copied = copy_closure(module_closure(["pkg.b"], package), package, tmp_path / "out")

    assert copied == tmp_path / "out" / "pkg"
    assert sorted(relative(copied.rglob("*.py"), tmp_path / "out")) == [
        "pkg/__init__.py", "pkg/b.py", "pkg/c/__init__.py", "pkg/c/d.py", "pkg/c/helper.py", "pkg/f.py", "pkg/g.py"]
    assert (copied / "g.py").read_text() == "VALUE = 1\n"


class _ParsesWhenCollected:
    """Cyclic garbage whose finalizer parses, as py4j's does for a stopped SparkContext
    (it logs a traceback, and Python 3.11's traceback formatting calls ast.parse), and
    leaves the same kind of garbage behind, so every collection has one to run."""

    left, running = 0, False

    def __del__(self):
        cls = _ParsesWhenCollected
        if cls.running or cls.left <= 0:  # the collections of its own parse run none
            return
        cls.running, cls.left = True, cls.left - 1
        try:
            ast.parse("model.layers[0](inputs)")
        finally:
            cls.running = False
        _leave_parsing_garbage()


def _leave_parsing_garbage():
    garbage = _ParsesWhenCollected()
    garbage.itself = garbage  # a cycle: only the collector frees it


def test_a_finalizer_that_parses_during_a_collection_does_not_break_the_closure_s_parse():
    # CI once failed with "AST constructor recursion depth mismatch" while a closure was
    # read: a collection during ast.parse ran a parsing finalizer (CPython gh-106905). A
    # collection at every allocation, each running such a finalizer, makes it certain here.
    thresholds = gc.get_threshold()
    _ParsesWhenCollected.left = 1_000_000  # more than the parse allocates: every collection runs one
    _leave_parsing_garbage()
    gc.set_threshold(1)
    try:
        tree = parse_source(JOBS_DIR / "common" / "config.py")
    finally:
        _ParsesWhenCollected.left = 0
        gc.set_threshold(*thresholds)
        gc.collect()
    assert any(isinstance(node, ast.FunctionDef) and node.name == "resolve_config" for node in tree.body)
