"""Imports point down only: pure modules do no I/O, formats never touch the store, nothing imports the CLI."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ckstore"
PURE = {"errors", "objects", "chunking", "codec", "graph", "paths", "progress", "stats", "query", "diff"}
IO_MODULES = {"os", "io", "mmap", "shutil", "tempfile", "subprocess", "socket", "lmdb", "pathlib", "open"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__")


def ckstore_imports(path: Path) -> tuple[set[str], set[str]]:
    """(ckstore modules imported, top-level external modules imported) of one file."""
    tree = ast.parse(path.read_text())
    pkg_parts = module_name(path).split(".")
    if path.name != "__init__.py":
        pkg_parts = pkg_parts[:-1]
    internal, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                internal.add(mod.strip(".") or "")
                if not node.module:
                    internal.update(".".join(base + [a.name]).strip(".") for a in node.names)
            elif node.module and node.module.startswith("ckstore"):
                internal.add(node.module.removeprefix("ckstore").strip("."))
            elif node.module:
                external.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ckstore"):
                    internal.add(a.name.removeprefix("ckstore").strip("."))
                else:
                    external.add(a.name.split(".")[0])
    return internal, external


FILES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: module_name(p) or "__init__")
def test_layers(path):
    name = module_name(path)
    internal, external = ckstore_imports(path)
    top = {m.split(".")[0] for m in internal if m}
    assert "cli" not in top or name == "cli", f"{name} imports the CLI"
    if name in PURE:
        assert top <= PURE, f"pure module {name} imports {top - PURE}"
        assert not external & IO_MODULES, f"pure module {name} imports I/O modules {external & IO_MODULES}"
    if name.startswith("formats"):
        assert top <= {"errors", "formats"}, f"{name} reaches beyond formats: {top}"
    if name.startswith("store"):
        assert top <= PURE | {"store"}, f"{name} reaches above the store: {top - PURE - {'store'}}"
    if name == "refs":
        assert top <= PURE | {"store"}, f"refs imports {top}"
    if name == "cli":
        assert "store" not in top, "the CLI goes through the library API, not the store"


def test_cli_does_not_import_torch_or_numpy_at_start():
    import subprocess
    import sys
    code = "import sys, ckstore.cli; print('torch' in sys.modules, 'numpy' in sys.modules, 'lmdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]
