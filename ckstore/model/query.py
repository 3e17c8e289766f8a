"""A small query language over commit records, e.g. `metrics.val_loss < 0.3 and params.lr >= 1e-4`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple, NoReturn, Union

from ..errors import QuerySyntaxError
from .metadata import META_SECTIONS

MAX_QUERY = 10_000  # characters in one query
MAX_DEPTH = 64  # nested '(' and 'not'
MAX_PATTERN = 200  # characters in one '~' pattern
MAX_REPEATS = 3  # quantifiers (* + ? {m,n}) in one '~' pattern
SUBJECT_CAP = (10_000, 4_000, 400, 100)  # '~' searches only this many leading characters, by quantifier count
KEYWORDS = frozenset({"and", "or", "not", "in", "exists", "true", "false", "null"})
OPS = ("==", "!=", "<=", ">=", "<", ">", "~")
Scalar = Union[int, float, str, bool, None]
_MISSING: Any = object()
_NUM = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_]+")
_REPEAT = re.compile(r"[*+?]|\{\d*,?\d*\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}
_LITERALS = {"true": True, "false": False, "null": None}


class Tok(NamedTuple):
    """One token: kind (op, punct, kw, path, num, str or eof), parsed value, 1-based column, source text."""
    kind: str  # op punct kw path num str eof
    value: Any
    col: int  # 1-based character offset into the whole query
    text: str


def _error(text: str, msg: str, col: int) -> QuerySyntaxError:
    """`msg at column N`, then the query (a window of it) with a caret under column N."""
    lo, hi = max(0, col - 41), min(len(text), col + 39)
    shown = "".join(c if c.isprintable() else " " if c in "\t\r\n" else "?" for c in text[lo:hi])
    pre, post = ("..." if lo else ""), ("..." if hi < len(text) else "")
    caret = " " * (len(pre) + col - 1 - lo) + "^"
    return QuerySyntaxError(f"{msg} at column {col}\n  {pre}{shown}{post}\n  {caret}", column=col)


def _desc(t: Tok) -> str:
    return "the end of the query" if t.kind == "eof" else repr(t.text[:40])


def _tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(text)
    while i < n:
        c, col = text[i], i + 1
        if c in " \t\r\n":
            i += 1
        elif op := next((o for o in OPS if text.startswith(o, i)), None):
            toks.append(Tok("op", op, col, op))
            i += len(op)
        elif c in "()[],":
            toks.append(Tok("punct", c, col, c))
            i += 1
        elif c in "\"'":
            value, i = _string(text, i)
            toks.append(Tok("str", value, col, text[col - 1:i]))
        elif c == "`" or _IDENT.match(text, i):
            path, i = _path(text, i)
            word = text[col - 1:i]
            toks.append(Tok("kw", word, col, word) if word in KEYWORDS else Tok("path", path, col, word))
        elif m := _NUM.match(text, i):
            i = m.end()
            if i < n and (text[i].isalnum() or text[i] in "_.`"):
                raise _error(text, f"unexpected {text[i]!r} after the number {m.group()!r}", i + 1)
            try:
                num: int | float = float(m.group()) if any(ch in m.group() for ch in ".eE") else int(m.group())
            except ValueError:
                raise _error(text, "number too long", col) from None
            toks.append(Tok("num", num, col, m.group()))
        else:
            raise _error(text, f"unexpected character {c!r}" + " (use '==' or '!=')" * (c in "=!"), col)
    toks.append(Tok("eof", None, n + 1, ""))
    return toks


def _string(text: str, i: int) -> tuple[str, int]:
    """The string literal opening at text[i]; unknown escapes keep their backslash (so `"\\d+"` is a regex)."""
    quote, j, out = text[i], i + 1, []
    while j < len(text) and text[j] != quote:
        e = text[j + 1] if text[j] == "\\" and j + 1 < len(text) else ""
        if e == "u":
            digits = text[j + 2:j + 6]
            if len(digits) != 4 or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
                raise _error(text, "expected 4 hex digits after '\\u'", j + 3)
            out.append(chr(int(digits, 16)))
        else:
            out.append(_ESCAPES.get(e, "\\" + e) if e else text[j])
        j += 6 if e == "u" else 2 if e else 1
    if j >= len(text):
        raise _error(text, f"unterminated string (no closing {quote} for the one at column {i + 1})", i + 1)
    return "".join(out), j + 1


def _path(text: str, i: int) -> tuple[tuple[str, ...], int]:
    """A dotted path at text[i]: identifiers, digits after a dot, or `backtick quoted` segments."""
    segs: list[str] = []
    while True:
        if text.startswith("`", i):
            end = text.find("`", i + 1)
            if end <= i + 1:
                raise _error(text, "unterminated `quoted name`" if end < 0 else "empty `quoted name`", i + 1)
            segs.append(text[i + 1:end])
            i = end + 1
        elif m := (_SEGMENT if segs else _IDENT).match(text, i):
            segs.append(m.group())
            i = m.end()
        else:
            raise _error(text, f"expected a name after {'.'.join(segs) + '.'!r}", i + 1)
        if not text.startswith(".", i):
            return tuple(segs), i
        i += 1


def _check_pattern(p: str) -> tuple[str, int]:
    """('', quantifier count) for a pattern we can search safely, else (why not, 0)."""
    if len(p) > MAX_PATTERN:
        return f"pattern longer than {MAX_PATTERN} characters", 0
    stack, i, count, after_quant = [[False, False]], 0, 0, False  # per open group: [has quantifier, has '|']
    while i < len(p):
        c, m = p[i], _REPEAT.match(p, i)
        if m and not after_quant:
            count, stack[-1][0], after_quant, i = count + 1, True, True, m.end()
            continue
        after_quant = False
        if c == "\\":
            if p[i + 1:i + 2] in tuple("123456789"):
                return "backreferences are not supported", 0
            i += 2
        elif c == "[":
            j = i + 1 + (p[i + 1:i + 2] == "^")
            j += p[j:j + 1] == "]"
            while j < len(p) and p[j] != "]":
                j += 1 + (p[j] == "\\")
            i = j + 1
        elif c == "(":
            if p.startswith(("(?P=", "(?("), i):
                return "backreferences are not supported", 0
            stack.append([False, False])
            i += 1 + p.startswith("(?", i)
        elif c == ")" and len(stack) > 1:
            inner_quant, inner_alt = stack.pop()
            after = _REPEAT.match(p, i + 1)
            if after and after.group() != "?" and (inner_quant or inner_alt):
                what = "a repeated group with a quantifier inside" if inner_quant else "a repeated group with '|'"
                return f"{what} (like (a+)+ or (a|b)*) can take exponential time", 0
            stack[-1][0] |= inner_quant
            i += 1
        else:
            stack[-1][1] |= c == "|"
            i += 1
    if count > MAX_REPEATS:
        return f"more than {MAX_REPEATS} quantifiers (* + ? {{m,n}})", 0
    return "", count


def _iso_time(text: str, value: str, col: int) -> float:
    try:
        t = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError, OSError):
        raise _error(text, "expected an ISO date or time like \"2026-01-01\" or \"2026-01-01T12:00Z\"", col) from None


# -- the AST ------------------------------------------------------------------------------------------------------


def _kind(v: Any) -> str:
    if v is None or isinstance(v, bool):
        return "null" if v is None else "bool"
    return "num" if isinstance(v, (int, float)) else "str" if isinstance(v, str) else "other"


def resolve(record: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` in `record` (data/seeds/env/extra fall back to record["meta"]), or the _MISSING marker."""
    if not isinstance(record, dict):
        return _MISSING
    head, cur = path[0], record.get(path[0], _MISSING)
    if cur is _MISSING and head in META_SECTIONS and isinstance(record.get("meta"), dict):
        cur = record["meta"].get(head, _MISSING)
    for seg in path[1:]:
        if isinstance(cur, dict):
            cur = cur.get(seg, _MISSING)
        elif isinstance(cur, (list, tuple)) and seg.isascii() and seg.isdigit() and len(seg) < 13 \
                and int(seg) < len(cur):
            cur = cur[int(seg)]
        else:
            return _MISSING
    return cur


def _compare(actual: Any, op: str, expected: Scalar) -> bool:
    ka, ke = _kind(actual), _kind(expected)
    if actual is _MISSING or ka == "other" or (ka != ke and "null" not in (ka, ke)):
        return False
    if op in ("==", "!="):
        return (actual == expected) == (op == "==")
    if ka != ke or ka not in ("num", "str"):
        return False
    return {"<": actual < expected, "<=": actual <= expected, ">": actual > expected, ">=": actual >= expected}[op]


class Expr:
    """A parsed query; `matches(record)` says whether a CommitInfo.to_dict()-shaped record satisfies it."""

    def matches(self, record: dict) -> bool:
        """Whether `record` satisfies the query; each subclass implements it."""
        raise NotImplementedError


@dataclass(frozen=True)
class Compare(Expr):
    """`path OP value` (== != < <= > >=): a missing path, or a value of another kind (null aside), never matches."""
    path: tuple[str, ...]
    op: str
    value: Scalar

    def matches(self, record: dict) -> bool:
        """True when the value at `path` compares as asked; order comparisons need two numbers or two strings."""
        return _compare(resolve(record, self.path), self.op, self.value)


@dataclass(frozen=True)
class Regex(Expr):
    """`path ~ "pattern"`: a regex search over the first `cap` characters of a string value."""
    path: tuple[str, ...]
    pattern: str
    regex: re.Pattern = field(compare=False, repr=False)
    cap: int = field(default=SUBJECT_CAP[0], compare=False, repr=False)

    def matches(self, record: dict) -> bool:
        """True when the value at `path` is a string whose first `cap` characters contain a match."""
        v = resolve(record, self.path)
        return isinstance(v, str) and self.regex.search(v[:self.cap]) is not None


@dataclass(frozen=True)
class In(Expr):
    """`path in (v1, v2, ...)`: the value equals one of the listed scalars."""
    path: tuple[str, ...]
    values: tuple[Scalar, ...]

    def matches(self, record: dict) -> bool:
        """True when the value at `path` equals (as `==` does) any of `values`."""
        v = resolve(record, self.path)
        return any(_compare(v, "==", x) for x in self.values)


@dataclass(frozen=True)
class Exists(Expr):
    """`exists path`: the record has a value at `path` (null included)."""
    path: tuple[str, ...]

    def matches(self, record: dict) -> bool:
        """True when `path` resolves to a value, null included."""
        return resolve(record, self.path) is not _MISSING


@dataclass(frozen=True)
class Not(Expr):
    """`not expr`."""
    expr: Expr

    def matches(self, record: dict) -> bool:
        """True when `expr` does not match."""
        return not self.expr.matches(record)


@dataclass(frozen=True)
class And(Expr):
    """`a and b and ...`."""
    items: tuple[Expr, ...]

    def matches(self, record: dict) -> bool:
        """True when every item matches."""
        return all(e.matches(record) for e in self.items)


@dataclass(frozen=True)
class Or(Expr):
    """`a or b or ...`."""
    items: tuple[Expr, ...]

    def matches(self, record: dict) -> bool:
        """True when any item matches."""
        return any(e.matches(record) for e in self.items)


# -- the parser ---------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.toks, self.i, self.depth = text, _tokenize(text), 0, 0

    def fail(self, msg: str, t: Tok, hint: str = "") -> NoReturn:
        raise _error(self.text, (f"{msg}, found {_desc(t)}" if msg.startswith("expected") else msg) + hint, t.col)

    def at(self, word: str) -> bool:
        return self.toks[self.i].kind in ("kw", "punct") and self.toks[self.i].value == word

    def take(self) -> Tok:
        t = self.toks[self.i]
        self.i += t.kind != "eof"
        return t

    def enter(self, t: Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"query nested too deeply (more than {MAX_DEPTH} levels of '(' and 'not')", t)

    def chain(self, word: str) -> Expr:
        """or := and ('or' and)* ; and := not ('and' not)*"""
        items = [self.chain("and") if word == "or" else self.not_()]
        while self.at(word):
            self.take()
            items.append(self.chain("and") if word == "or" else self.not_())
        return items[0] if len(items) == 1 else (Or if word == "or" else And)(tuple(items))

    def not_(self) -> Expr:
        nots = 0
        while self.at("not"):
            self.enter(self.take())
            nots += 1
        e = self.atom()
        self.depth -= nots
        for _ in range(nots):
            e = Not(e)
        return e

    def atom(self) -> Expr:
        prev, t = self.toks[self.i - 1] if self.i else None, self.take()
        if t.kind == "punct" and t.value == "(":
            self.enter(t)
            e = self.chain("or")
            if not self.at(")"):
                self.fail(f"expected ')' to close the '(' at column {t.col}", self.toks[self.i])
            self.take()
            self.depth -= 1
            return e
        if t.kind != "path":
            after = f" after {prev.text[:40]!r}" if prev else ""
            hint = " (quote a name that is a keyword in backticks: `in`)" if t.kind == "kw" else ""
            self.fail(f"expected a comparison like metrics.loss < 0.3{after}", t, hint)
        op = self.take()
        if op.kind == "kw" and op.value in ("exists", "in"):
            return Exists(t.value) if op.value == "exists" else In(t.value, self.values(t.value))
        if op.kind != "op":
            self.fail(f"expected an operator (== != < <= > >= ~ in exists) after {t.text[:40]!r}", op)
        v = self.toks[self.i]
        value = self.value(t.value, op.value, f"after {op.value!r}")
        if op.value != "~":
            return Compare(t.value, op.value, value)
        why, count = _check_pattern(v.value)
        try:
            regex = None if why else re.compile(v.value, re.IGNORECASE)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            why = f"invalid regular expression ({exc})"
        if why:
            self.fail(f"unsafe or invalid pattern: {why}", v)
        return Regex(t.value, v.value, regex, SUBJECT_CAP[count])

    def value(self, path: tuple[str, ...], op: str, where: str) -> Scalar:
        t, any_value = self.take(), op in ("==", "!=", "in")
        if t.kind == "str" and (op == "~" or path != ("time",)):
            return t.value
        if t.kind == "str":
            return _iso_time(self.text, t.value, t.col)
        if (t.kind == "num" and op != "~") or (any_value and t.kind == "kw" and t.value in _LITERALS):
            return _LITERALS[t.value] if t.kind == "kw" else t.value
        what = "a value" if any_value else "a string pattern" if op == "~" else "a number or string"
        self.fail(f"expected {what} {where}", t)

    def values(self, path: tuple[str, ...]) -> tuple[Scalar, ...]:
        t = self.take()
        if t.kind != "punct" or t.value != "[":
            self.fail("expected '[' after 'in'", t)
        out: list[Scalar] = []
        while not (not out and self.at("]")):
            out.append(self.value(path, "in", f"in the list opened at column {t.col}"))
            if not self.at(","):
                break
            self.take()
        if not self.at("]"):
            self.fail(f"expected ',' or ']' in the list opened at column {t.col}", self.toks[self.i])
        self.take()
        return tuple(out)


def _checked(text: Any) -> str:
    if not isinstance(text, str):
        raise QuerySyntaxError(f"a query must be a string, not {type(text).__name__}")
    if len(text) > MAX_QUERY:
        raise QuerySyntaxError(f"query too long ({len(text)} characters; the limit is {MAX_QUERY})")
    if "\0" in text:
        raise _error(text, "unexpected NUL character", text.index("\0") + 1)
    return text


def parse(text: str) -> Expr:
    """Parse a query. Precedence: not > and > or; `path OP value`, `path in [v, ...]`, `path exists`.

    Semantics: a comparison, `in` or `~` on a missing key is False (so `not x == 1` is True when x is missing);
    `exists` is True for any present key, even one holding null. Values compare only with the same kind (number,
    string, bool): `step == "5"` and `step != "5"` are both False; any present value may be compared with null by
    == and !=. `<`-style operators take numbers or strings only. `~` is a case-insensitive re.search on strings;
    patterns are limited to MAX_PATTERN characters and MAX_REPEATS quantifiers, with no backreferences and no
    repeated group holding a quantifier or '|' (`(a+)+`, `(a|b)*`), and search only the first SUBJECT_CAP[k]
    characters for a pattern with k quantifiers. A string compared with `time` is an ISO date/time (naive = UTC)
    converted to a Unix timestamp, so `time >= "2026-01-01"` works. Escapes in strings: \\n \\t \\r \\\\ \\" \\'
    \\uXXXX; any other backslash is kept (`"\\d+"`). Raises QuerySyntaxError (with .column) for anything else.
    """
    p = _Parser(_checked(text))
    if p.toks[0].kind == "eof":
        p.fail("empty query: expected a comparison like metrics.loss < 0.3", p.toks[0])
    e, t = p.chain("or"), p.toks[p.i]
    if t.kind != "eof":
        p.fail("unmatched ')'" if t.text == ")" else "expected 'and', 'or' or the end of the query", t)
    return e


def compile_query(text: str) -> Callable[[dict], bool]:
    """The predicate `record -> bool` of a query (see parse)."""
    return parse(text).matches


def parse_path(text: str) -> tuple[str, ...]:
    """A dotted path alone, e.g. "metrics.`val/loss`" -> ("metrics", "val/loss")."""
    toks = _tokenize(_checked(text))
    if len(toks) != 2 or toks[0].kind != "path":
        t = toks[0] if toks[0].kind != "path" else toks[1]
        raise _error(text, f"expected a name like metrics.loss, found {_desc(t)}", t.col)
    return toks[0].value


def sort_key(path: str) -> Callable[[dict], tuple]:
    """A key for sorted(records): numbers, then strings, then bools, then other values; missing/null/NaN last.

    A leading '-' (`-metrics.loss`) sorts descending, still with missing values last.
    """
    desc = path.strip().startswith("-")
    parsed = parse_path(path.strip()[1:] if desc else path)

    def key(record: dict) -> tuple:
        v = resolve(record, parsed)
        if v is _MISSING or v is None or (isinstance(v, float) and math.isnan(v)):
            return (1, 0, 0)
        rank = ("num", "str", "bool", "other").index(_kind(v))
        v = repr(v) if rank == 3 else v
        if desc:  # negate: numbers and bools directly, strings as code points ending in a sentinel above them all
            v = tuple(-ord(c) for c in v) + (1,) if isinstance(v, str) else -v
        return (0, rank, v)

    return key


def query_paths(text: str) -> list[tuple[str, ...]]:
    """The key paths a query reads, in order of appearance, each once."""
    out: list[tuple[str, ...]] = []
    stack: list[Expr] = [parse(text)]
    while stack:
        e = stack.pop()
        if isinstance(e, (And, Or)):
            stack.extend(reversed(e.items))
        elif isinstance(e, Not):
            stack.append(e.expr)
        elif hasattr(e, "path") and e.path not in out:
            out.append(e.path)
    return out


def record_paths(record: dict, limit: int = 10_000) -> set[tuple[str, ...]]:
    """Every key path present in a record (what a query can name), the meta sections also without "meta."."""
    out: set[tuple[str, ...]] = set()
    stack: list[tuple[tuple[str, ...], Any]] = [((k,), v) for k, v in record.items()]
    while stack and len(out) < limit:
        path, value = stack.pop()
        out.add(path)
        if path[0] == "meta" and len(path) >= 2 and path[1] in META_SECTIONS:
            out.add(path[1:])
        if isinstance(value, dict):
            stack.extend((path + (k,), v) for k, v in value.items() if isinstance(k, str))
    return out
