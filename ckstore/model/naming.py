"""Names people can parse: `describe` names (`champion-3-g1a2b3c4`) and artifact names from a template such as
`{model}-{branch}-v{n}-{phase}-{kind}`, built from a commit's metadata and parsed back (pure)."""

from __future__ import annotations

import re
import string
from typing import Any

from ..errors import UsageError

_DESCRIBED = re.compile(r"^(?P<name>.+)-(?P<distance>\d+)-g(?P<id>[0-9a-f]{4,64})$")
_FIELD_TEXT = r"[A-Za-z0-9_.]+"
BUILTIN = ("branch", "n", "id", "step")


def describe_name(name: str | None, distance: int, oid: bytes) -> str:
    """git describe's form: NAME when the commit is the named one, NAME-DISTANCE-gID otherwise, gID with no name."""
    short = oid.hex()[:8]
    if name is None:
        return f"g{short}"
    return name if distance == 0 else f"{name}-{distance}-g{short}"


def parse_described(text: str) -> tuple[str, int, str] | None:
    """(name, distance, id prefix) of a describe name, or None when `text` is not one."""
    m = _DESCRIBED.match(text)
    return (m["name"], int(m["distance"]), m["id"]) if m else None


def template_fields(template: str) -> list[str]:
    """The fields a name template uses, in order; UsageError for a malformed template."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"name template {template!r}: {exc}") from None
    fields = []
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if not name or spec or conv or not re.fullmatch(r"[A-Za-z_][\w.]*", name):
            raise UsageError(f"name template {template!r}: {{{name}}} must be a plain field name like {{model}}")
        fields.append(name)
    if not fields:
        raise UsageError(f"name template {template!r} has no field")
    return fields


def field_value(name: str, builtin: dict, record: dict) -> Any:
    """A template field's value: a built-in (branch, n, id, step), a dotted path into the commit record
    (params.lr), or a bare key looked up in extra, data, params, then metrics."""
    if name in builtin:
        return builtin[name]
    meta = record.get("meta") or {}  # CommitInfo.to_dict keeps data, seeds, env and extra under "meta"
    sections = [record.get(s) or meta.get(s) or {} for s in ("extra", "data", "params", "metrics")]
    if "." in name:
        parts = name.split(".")
        value: Any = record if parts[0] in record else meta
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
        return value
    return next((s[name] for s in sections if isinstance(s, dict) and name in s), None)


def render(template: str, builtin: dict, record: dict) -> str | None:
    """The name of a commit under `template`, or None when a field is missing or would not parse back (a value
    holding the template's own separators)."""
    values = {}
    for name in template_fields(template):
        value = field_value(name, builtin, record)
        if value is None or isinstance(value, (dict, list)):
            return None
        text = str(value)
        if not re.fullmatch(_FIELD_TEXT, text):
            text = re.sub(r"[^A-Za-z0-9_.]", "_", text)
        values[name] = text
    out = template.format(**values)
    return out if parse(template, out) is not None else None


def parse(template: str, name: str) -> dict[str, str] | None:
    """The fields of a name made by `template` (None when it was not): the inverse of `render`."""
    pattern, seen = "", set()
    for literal, fname, _, _ in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if fname is not None:
            if fname in seen:
                pattern += f"(?P={_group(fname)})"
            else:
                pattern += f"(?P<{_group(fname)}>{_FIELD_TEXT}?)"
                seen.add(fname)
    m = re.fullmatch(pattern, name)
    if not m:
        return None
    return {f: m[_group(f)] for f in template_fields(template)}


def _group(field_name: str) -> str:
    return "f_" + field_name.replace(".", "__")
