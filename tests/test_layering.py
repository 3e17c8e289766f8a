"""Imports point down only (docs/design.md, "Modules"): every import is parsed, including those inside functions and
under TYPE_CHECKING; no module uses another's `_private` names; no import cycle; no module over 500 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ckstore"
MAX_LINES = 500

# What each layer may import (besides itself). The first part of a module's name is its layer.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "allocator": set(),
    "model": {"errors"},
    "formats": {"errors", "model"},
    "fs": {"errors"},
    "results": {"errors", "model"},
    "storage": {"errors", "model", "fs", "results"},
    "transport": {"errors", "fs", "model"},
    "engine": {"errors", "model", "formats", "fs", "storage", "results"},
    "sync": {"errors", "model", "formats", "fs", "storage", "results", "engine", "transport"},
    "api": {"errors", "model", "formats", "fs", "storage", "results", "engine", "transport", "sync"},
    "integrations": {"api", "errors", "results", "model", "formats"},  # training frameworks, on top of the API
    "views": {"api", "errors", "results", "model", "fs"},  # what pictures show; pictures written whole (fs)
    "ui": {"views", "api", "errors", "results", "model"},  # the local web view's server
    # the served remote: keys through DirectoryTransport, history read for ff_only (engine's rules, storage's
    # object decoding), tokens and state written through fs
    "serve": {"transport", "engine", "storage", "model", "errors", "fs"},
    "cli": {"errors", "model", "results", "api", "allocator", "formats", "views", "ui", "serve", ""},
    "": {"api", "errors", "results", "integrations"},  # ckstore/__init__.py (Checkpointer, snapshot)
    "__main__": {"cli"},  # python -m ckstore
}
FORBIDDEN_MODULES = {"transport": {"model.objects"}}  # transports move bytes by key and know no objects
IO_MODULES = {"os", "io", "mmap", "shutil", "tempfile", "subprocess", "socket", "lmdb", "pathlib"}
PURE_LAYERS = {"model", "results"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PKG).with_suffix("").parts).removesuffix("__init__").rstrip(".")


def package_of(name: str, is_package: bool) -> list[str]:
    parts = name.split(".") if name else []
    return parts if is_package else parts[:-1]


def imports_of(name: str, source: str, is_package: bool = False) -> list[tuple[str, list[str], int]]:
    """(ckstore module imported, names taken from it, line) for every import in `source`; external modules are
    reported as "ext:NAME"."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                base = package_of(name, is_package)
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "ckstore" or node.module.startswith("ckstore.")):
                mod = node.module.removeprefix("ckstore").lstrip(".")
            else:
                out.append((f"ext:{(node.module or '').split('.')[0]}", names, node.lineno))
                continue
            out.append((mod, names, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "ckstore" or a.name.startswith("ckstore."):
                    out.append((a.name.removeprefix("ckstore").lstrip("."), [], node.lineno))
                else:
                    out.append((f"ext:{a.name.split('.')[0]}", [], node.lineno))
    return out


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def resolve(mod: str, names: list[str], known: set[str]) -> list[str]:
    """The ckstore modules an import statement reaches: `from .pkg import mod` names a module, not a package."""
    targets = [f"{mod}.{n}".strip(".") for n in names if f"{mod}.{n}".strip(".") in known]
    return targets or [mod]


def violations(name: str, source: str, is_package: bool = False, known: set[str] | None = None) -> list[str]:
    """Every broken layering rule in one module's source."""
    known = known if known is not None else set(modules())
    layer = name.split(".")[0] if name else ""
    problems = []
    if source.count("\n") > MAX_LINES:
        problems.append(f"{name}: {source.count(chr(10))} lines (limit {MAX_LINES})")
    for mod, names, line in imports_of(name, source, is_package):
        if mod.startswith("ext:"):
            if layer in PURE_LAYERS and mod[4:] in IO_MODULES:
                problems.append(f"{name}:{line}: pure layer imports the I/O module {mod[4:]}")
            continue
        for target in resolve(mod, names, known):
            top = target.split(".")[0] if target else ""
            if top != layer and top not in ALLOWED.get(layer, set()):
                problems.append(f"{name}:{line}: {layer or 'ckstore'} must not import {target or 'ckstore'}")
            if any(target == f or target.startswith(f + ".") for f in FORBIDDEN_MODULES.get(layer, ())):
                problems.append(f"{name}:{line}: {layer} must not import {target}")
        if mod != name:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{name}:{line}: uses private names {private} of {mod}")
    tree = ast.parse(source)
    external = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree) for a in getattr(node, "names", ())
                if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and not node.level
                                                    and not (node.module or "").startswith("ckstore"))}
    for node in ast.walk(tree):
        # `x._name` is another object's private part unless x is the object itself or an external module
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and owner not in external:
                problems.append(f"{name}:{node.lineno}: uses private {ast.unparse(node)}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges = set()
        for mod, names, _ in imports_of(name, path.read_text(), path.name == "__init__.py"):
            if not mod.startswith("ext:"):
                edges.update(t for t in resolve(mod, names, set(known)) if t in known and t != name)
        graph[name] = edges
    return graph


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: module_name(p) or "ckstore")
def test_module_follows_the_layers(path: Path) -> None:
    assert violations(module_name(path), path.read_text(), path.name == "__init__.py") == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("name, source, expected", [
    ("engine.planted", "from ..sync import push\n", "engine must not import sync.push"),
    ("engine.planted", "def f():\n    from ..transport.base import Transport\n", "engine must not import transport"),
    ("storage.planted", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..engine import repository\n",
     "storage must not import engine.repository"),
    ("model.planted", "from ..storage.refs import RefStore\n", "model must not import storage.refs"),
    ("model.planted", "import os\n", "pure layer imports the I/O module os"),
    ("formats.planted", "from ..storage.store import Store\n", "formats must not import storage.store"),
    ("transport.planted", "from ..model.objects import Commit\n", "transport must not import model.objects"),
    ("sync.planted", "from ..api import Repo\n", "sync must not import api"),
    ("api", "from .cli import main\n", "api must not import cli"),
    ("cli.planted", "from ..engine.repository import Repository\n", "cli must not import engine.repository"),
    ("integrations.planted", "from ..engine import history\n", "integrations must not import engine.history"),
    ("integrations.planted", "from ..sync.push import push\n", "integrations must not import sync.push"),
    ("cli.planted", "from ckstore.storage import refs\n", "cli must not import storage.refs"),
    ("sync.planted", "from ..engine.repository import _MEMO_MAX\n", "uses private names ['_MEMO_MAX']"),
    ("sync.planted", "from ..engine import repository\nx = repository._MEMO_MAX\n", "uses private repository._MEMO_MAX"),
    ("sync.planted", "def f(repo):\n    return repo.store._fd(b'')\n", "uses private repo.store._fd"),
    ("engine.planted", "x = 1\n" * (MAX_LINES + 1), "lines (limit"),
])
def test_checker_catches_a_planted_violation(name: str, source: str, expected: str) -> None:
    found = violations(name, source)
    assert any(expected in v for v in found), found


def test_checker_catches_a_planted_cycle() -> None:
    graph = import_graph()
    assert cycles(graph) == []
    graph["model.objects"] = graph["model.objects"] | {"engine.repository"}  # engine.repository imports model.objects
    assert any({"model.objects", "engine.repository"} <= set(c) for c in cycles(graph))


def test_cli_does_not_import_torch_numpy_or_lmdb_at_start() -> None:
    code = "import sys, ckstore.cli; print('torch' in sys.modules, 'numpy' in sys.modules, 'lmdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


def test_local_reads_never_load_sync(tmp_path: Path) -> None:
    """A full repository reads, diffs and checks out without importing the sync layer at all."""
    code = f"""
import sys, numpy as np, ckstore
with ckstore.Repo.init({str(tmp_path / 'r')!r}) as repo:
    repo.commit({{"w": np.arange(8, dtype=np.float32)}}, "a", capture_env=False)
    repo.commit({{"w": np.arange(8, dtype=np.float32) + 1}}, "b", capture_env=False)
with ckstore.Repo.open({str(tmp_path / 'r')!r}) as repo:
    repo.log(); repo.show(); repo.load(); repo.diff("HEAD~1", "HEAD"); repo.checkout("HEAD", {str(tmp_path / 'o')!r})
    b"".join(repo.cat("HEAD", repo.ls()[0]["path"])); repo.fsck(read_data=True)
print(sorted(m for m in sys.modules if m.startswith("ckstore.sync") or m.startswith("ckstore.transport")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cli_starts_without_optional_packages() -> None:
    """A bare `pip install ckstore` has typer (which may vendor click), not click itself, and none of the extras:
    `ckstore --help` and every command's help must start with all of them hidden."""
    import subprocess
    import sys
    hidden = ["click", "starlette", "uvicorn", "obstore", "boto3", "cryptography", "torch", "matplotlib",
              "safetensors", "yaml"]
    code = f"""
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ImportError(f"hidden: {{name}}")
        return None
sys.meta_path.insert(0, Hide())
from ckstore.cli import main
for args in (["--help"], ["serve", "--help"], ["key", "--help"], ["init", "--help"], ["remote", "add", "--help"]):
    sys.argv = ["ckstore", *args]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, (args, exc.code)
"""
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr[-2000:]
