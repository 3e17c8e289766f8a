"""Public functions have docstrings: every module, every public module-level function and class, every public
method of a public class (nested functions and dunders excluded), and every CLI command and subcommand's help."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
import typer

PKG = Path(__file__).resolve().parents[1] / "ckstore"
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def missing_docstrings(source: str) -> list[str]:
    """What in `source` lacks a docstring: "<module>", or "name:line" / "Class.name:line" for public definitions
    at module level and public methods of public classes."""
    tree = ast.parse(source)
    missing = [] if ast.get_docstring(tree) else ["<module>"]

    def visit(body: list[ast.stmt], owner: str) -> None:
        for node in body:
            if isinstance(node, DEFS) and not node.name.startswith("_"):
                name = f"{owner}.{node.name}" if owner else node.name
                if not ast.get_docstring(node):
                    missing.append(f"{name}:{node.lineno}")
                if isinstance(node, ast.ClassDef):
                    visit(node.body, name)  # functions nested in functions are never visited

    visit(tree.body, "")
    return missing


def commands(group: click.Command, path: str = "ckstore") -> list[tuple[str, click.Command]]:
    """Every command under `group`, subgroups' commands included, as ("ckstore remote add", command)."""
    out = []
    for name, cmd in sorted(getattr(group, "commands", {}).items()):
        out.append((f"{path} {name}", cmd))
        out.extend(commands(cmd, f"{path} {name}"))
    return out


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_module_is_documented(path: Path) -> None:
    assert missing_docstrings(path.read_text()) == []


def test_every_cli_command_has_help() -> None:
    import ckstore.cli

    root = typer.main.get_command(ckstore.cli.app)
    found = commands(root)
    assert "ckstore remote add" in dict(found)  # the walk reaches the subgroups
    assert (root.help or "").strip()
    assert [path for path, cmd in found if not (cmd.help or cmd.short_help or "").strip()] == []


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    pass\n", ["<module>", "f:1"]),
    ('"""Doc."""\ndef f():\n    pass\n', ["f:2"]),
    ('"""Doc."""\nclass C:\n    """Doc."""\n    def m(self):\n        pass\n', ["C.m:4"]),
    ('"""Doc."""\nclass C:\n    pass\n', ["C:2"]),
    ('"""Doc."""\ndef f():\n    """"""\n', ["f:2"]),  # an empty docstring is none
    ('"""Doc."""\nasync def f():\n    pass\n', ["f:2"]),
    ('"""Doc."""\nclass C:\n    """Doc."""\n    class D:\n        def m(self):\n            pass\n',
     ["C.D:4", "C.D.m:5"]),
])
def test_checker_catches_a_planted_omission(source: str, expected: list[str]) -> None:
    assert missing_docstrings(source) == expected


@pytest.mark.parametrize("source", [
    '"""Doc."""\ndef _private():\n    pass\n',
    '"""Doc."""\ndef f():\n    """Doc."""\n    def nested():\n        pass\n',
    '"""Doc."""\nclass C:\n    """Doc."""\n    def __init__(self):\n        pass\n'
    '    def _helper(self):\n        pass\n',
    '"""Doc."""\nclass _Private:\n    def method(self):\n        pass\n',
])
def test_checker_skips_what_the_rule_excludes(source: str) -> None:
    assert missing_docstrings(source) == []
