"""Commit metadata: typing key=value assignments, parsing metadata files, sections, schema validation."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import InvalidMetadata, UsageError
from .text import is_utf8

# The metadata sections of a commit, defined once: every commit object holds each as a mapping.
ALL_SECTIONS = ("metrics", "params", "data", "seeds", "env", "extra")
SECTIONS = tuple(s for s in ALL_SECTIONS if s != "env")      # what users set (env is captured)
META_SECTIONS = ("data", "seeds", "env", "extra")              # grouped under "meta" in JSON output
TOP_LEVEL = ("step", "message", "author") + SECTIONS
SCHEMA_TYPES = ("number", "integer", "string", "boolean", "object", "array", "any")


_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*)?([eE][-+]?[0-9]+)?")


def parse_scalar(text: str) -> Any:
    """Type a command-line value: true/false/null, JSON lists/maps, and numbers written canonically; anything else,
    such as "1.10" or "0123456" (a version, an id), stays the string it is. `KEY:=JSON` types explicitly."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    m = _NUMBER.fullmatch(text)
    if m:
        fraction = m.group(2) or ""
        if not fraction and not m.group(3):
            return int(text)
        if not (len(fraction) > 2 and fraction.endswith("0")):  # "1.0" is a float; "1.10" is a version
            value = float(text)
            if math.isfinite(value):
                return value
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    return text


def set_dotted(target: dict, key: str, value: Any) -> None:
    """Set target[a][b]... = value for the key "a.b..."; InvalidMetadata on an empty part or a non-dict on the way."""
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
    """Nested metadata from KEY=VALUE (typed by parse_scalar) and KEY:=JSON items; InvalidMetadata on bad ones."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidMetadata(f"{what} {item!r} is not KEY=VALUE (or KEY:=JSON)")
        if key.endswith(":"):
            key = key[:-1]
            try:
                typed = json.loads(value)
            except (ValueError, RecursionError) as exc:
                raise InvalidMetadata(f"{what} {ascii(item[:200])}: the value after := is not JSON "
                                      f"({type(exc).__name__ if isinstance(exc, RecursionError) else exc})") from None
        else:
            typed = parse_scalar(value)
            if what == "--metric" and isinstance(typed, str):
                typed = _metric_value(key.strip(), value)
        set_dotted(out, key.strip(), typed)
    return out


def _metric_value(name: str, text: str) -> float:
    """A metric's value: any float, "nan" and "inf" included (a diverged run's loss is worth recording)."""
    try:
        return float(text)
    except ValueError:
        raise InvalidMetadata(f"metric {name!r} must be a number, got {text!r}") from None


def parse_meta_text(text: str, name: str) -> dict:
    """Metadata from the text of a JSON, YAML or TOML file, chosen by the extension of `name`; the top level must
    be a mapping."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    try:
        if suffix == "toml":
            data = _toml().loads(text)
        elif suffix in ("yaml", "yml"):
            import yaml  # optional dependency: only needed for YAML metadata files
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ImportError:
        raise InvalidMetadata(f"{name}: reading YAML needs PyYAML", hint="pip install pyyaml") from None
    except Exception as exc:  # each parser has its own error types; all mean the same thing here
        raise InvalidMetadata(f"{name}: not valid {suffix or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMetadata(f"{name}: the top level must be a mapping")
    return data


def _toml() -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the backport, a dependency there
        import tomli as tomllib
    return tomllib


def deep_merge(base: dict, extra: dict) -> dict:
    """A copy of `base` with `extra` merged in, nested dicts merged key by key, other values from `extra` winning."""
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
    check_encodable(out)
    return out


MAX_DEPTH = 64  # metadata nested deeper is refused (readers bound msgpack nesting; real metadata is shallow)
MIN_INT, MAX_INT = -(1 << 63), (1 << 64) - 1  # the integers msgpack stores


def check_encodable(value: Any, what: str = "metadata") -> None:
    """Refuse (InvalidMetadata) what a commit object cannot store: strings or keys that are not valid UTF-8,
    integers outside -2**63 .. 2**64-1, nesting deeper than MAX_DEPTH, types other than JSON's. Iterative, so
    any depth of input is refused cleanly."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        where = ascii(path.rstrip(".")) if path else "the top level"
        if depth > MAX_DEPTH:
            raise InvalidMetadata(f"{what} nests deeper than {MAX_DEPTH} levels (at {ascii(path[:80])}...)")
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise InvalidMetadata(f"{what} key {ascii(k)} at {where} must be a string")
                if not is_utf8(k):
                    raise InvalidMetadata(f"{what} key {ascii(k)} at {where} is not valid Unicode (a lone surrogate)")
                stack.append((v, f"{path}{k}.", depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, path, depth + 1) for v in item)
        elif isinstance(item, str):
            if not is_utf8(item):
                raise InvalidMetadata(f"{what} value at {where} is not valid Unicode (a lone surrogate in "
                                      f"{ascii(item)})")
        elif isinstance(item, int) and not isinstance(item, bool):
            if not MIN_INT <= item <= MAX_INT:
                raise InvalidMetadata(f"{what} integer at {where} is out of range (it must lie within -2**63 .. "
                                      "2**64-1)", hint="store it as a string or a float")
        elif not (item is None or isinstance(item, (float, bool))):
            raise InvalidMetadata(f"{what} value at {where} has unsupported type {type(item).__name__}",
                                  hint="use numbers, strings, booleans, lists and mappings")


def lookup(record: dict, key: str) -> tuple[bool, Any]:
    """(found, value) for a dotted key in a nested dict; (False, None) when any part is missing."""
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


def parse_requirements(items: list[str]) -> dict[str, str]:
    """`--require KEY:TYPE` options -> {key: type}, checked."""
    required = {}
    for item in items:
        key, sep, kind = item.rpartition(":")
        if not sep or not key:
            raise UsageError(f"--require {item!r} is not KEY:TYPE")
        required[key] = kind
    check_schema_spec(required)
    return required


def check_schema_spec(required: dict) -> dict:
    """The schema a repository stores for `required` ({key: type}); InvalidMetadata for an unknown type."""
    for key, kind in required.items():
        if kind not in SCHEMA_TYPES:
            raise InvalidMetadata(f"schema type {kind!r} for {key!r} is not one of {', '.join(SCHEMA_TYPES)}")
    return {"required": dict(required)}
