"""Commit metadata: parsing key=value and files, schema validation, and automatic environment capture."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .errors import InvalidMetadata

SECTIONS = ("metrics", "params", "data", "seeds", "extra")
TOP_LEVEL = ("step", "message", "author") + SECTIONS
SCHEMA_TYPES = ("number", "integer", "string", "boolean", "object", "array", "any")


def parse_scalar(text: str) -> Any:
    """Type a command-line value: integers, floats, true/false/null, JSON lists/maps; anything else is a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    for conv in (int, float):
        try:
            value = conv(text)
            if isinstance(value, float) and not math.isfinite(value):
                break
            return value
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def set_dotted(target: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(parts):
        raise InvalidMetadata(f"bad metadata key {key!r}", hint="use dotted names like params.lr or data.version")
    node = target
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise InvalidMetadata(f"metadata key {key!r} conflicts with the value already set at {p!r}")
        node = child
    node[parts[-1]] = value


def parse_assignments(items: list[str], what: str = "--meta") -> dict:
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidMetadata(f"{what} {item!r} is not KEY=VALUE")
        set_dotted(out, key.strip(), parse_scalar(value))
    return out


def load_meta_file(path: str | os.PathLike) -> dict:
    """JSON, YAML or TOML by extension; the top level must be a mapping."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InvalidMetadata(f"cannot read metadata file {p}: {exc.strerror or exc}") from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml  # optional dependency: only needed for YAML metadata files
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ImportError:
        raise InvalidMetadata(f"{p}: reading YAML needs PyYAML", hint="pip install pyyaml") from None
    except Exception as exc:  # each parser has its own error types; all mean the same thing here
        raise InvalidMetadata(f"{p}: not valid {suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMetadata(f"{p}: the top level must be a mapping")
    return data


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def split_sections(meta: dict) -> dict:
    """Route a flat metadata dict into commit fields: known sections stay, anything else goes to `extra`."""
    out: dict = {s: {} for s in SECTIONS}
    for key, value in meta.items():
        if key == "step":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidMetadata(f"step must be an integer, got {value!r}")
            out["step"] = value
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise InvalidMetadata(f"{key} must be a mapping, got {type(value).__name__}")
            out[key] = deep_merge(out[key], value)
        else:
            out["extra"][key] = value
    for name, value in out["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InvalidMetadata(f"metric {name!r} must be a number, got {value!r}")
    _check_encodable(out)
    return out


def _check_encodable(value: Any, path: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidMetadata(f"metadata key {path}{k!r} must be a string")
            _check_encodable(v, f"{path}{k}.")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_encodable(v, path)
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise InvalidMetadata(f"metadata value at {path.rstrip('.') or 'top'} has unsupported type "
                              f"{type(value).__name__}", hint="use numbers, strings, booleans, lists and mappings")


def lookup(record: dict, key: str) -> tuple[bool, Any]:
    node: Any = record
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


_PY_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if kind in ("number", "integer"):
        allowed = int if kind == "integer" else (int, float)
        return isinstance(value, allowed) and not isinstance(value, bool)
    return isinstance(value, _PY_TYPES[kind])


def validate_schema(schema: dict, record: dict) -> None:
    """Refuse a commit whose metadata lacks a required key or has the wrong type."""
    problems = []
    for key, kind in (schema.get("required") or {}).items():
        found, value = lookup(record, key)
        if not found or value is None:
            problems.append(f"{key} is required ({kind})")
        elif not _type_ok(value, kind):
            problems.append(f"{key} must be {kind}, got {value!r}")
    if problems:
        raise InvalidMetadata("metadata fails the repository schema: " + "; ".join(problems),
                              hint="add them with --meta KEY=VALUE / --metric NAME=VALUE, or see .ckstore/config")


def check_schema_spec(required: dict) -> dict:
    for key, kind in required.items():
        if kind not in SCHEMA_TYPES:
            raise InvalidMetadata(f"schema type {kind!r} for {key!r} is not one of {', '.join(SCHEMA_TYPES)}")
    return {"required": dict(required)}


_PACKAGES = ("numpy", "torch", "transformers", "safetensors", "jax", "ckstore")


def capture_env() -> dict:
    """What produced this checkpoint: interpreter, platform, library versions, and the training code's git state."""
    env: dict = {
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count() or 0,
        "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv else [],
    }
    from importlib import metadata as importlib_metadata  # ~20 ms to import: only when a commit is made

    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    env["packages"] = versions
    torch = sys.modules.get("torch")  # never import torch just to ask about GPUs
    if torch is not None:
        try:
            env["cuda"] = bool(torch.cuda.is_available())
            if env["cuda"]:
                env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # a broken CUDA setup must not block a commit
            env["cuda"] = False
    git = _git_state()
    if git:
        env["git"] = git
    return env


def _git_state() -> dict | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None
