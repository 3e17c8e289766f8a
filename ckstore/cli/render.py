"""Human output for the CLI: log, show, diff, lineage and audit tables (the progress bar is in cli.progress)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..model.metadata import SECTIONS
from ..model.pretty import is_number, sparkline, subject, when
from ..model.progress import human_bytes
from ..results import metric_value
from .app import warn

if TYPE_CHECKING:
    from ..results import CommitInfo, ShowInfo

class _Console(Console):
    """rich's console, but a closed pipe (`ckstore log | head -1`) ends the command successfully, as the reader
    has all it wanted: the entry point turns BrokenPipeError into exit 0."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


out = _Console(highlight=False, soft_wrap=True)


def _metrics(c: CommitInfo) -> str:
    return "  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(c.metrics.items()))


def _decor(c: CommitInfo) -> str:
    return escape(f" ({', '.join(c.refs)})") if c.refs else ""


def graph_prefixes(entries: list[CommitInfo]) -> list[str]:
    """One lane per open line of history: '*' marks the commit, '|' the lanes passing by."""
    lanes: list[str] = []
    prefixes = []
    for e in entries:
        if e.id not in lanes:
            lanes.append(e.id)
        col = lanes.index(e.id)
        prefixes.append(" ".join("*" if i == col else "|" for i in range(len(lanes))))
        lanes = [lane for i, lane in enumerate(lanes) if lane != e.id or i == col]
        lanes[col:col + 1] = [p for p in e.parents if p not in lanes] or []
    return prefixes


def _print_table(table: Table) -> None:
    """Tables fit a terminal; piped or redirected output keeps every cell whole (no squeezing to 80 columns)."""
    if out.is_terminal:
        out.print(table)
    else:
        _Console(file=out.file, highlight=False, soft_wrap=True, width=1 << 20).print(table)


def render_log(entries: list[CommitInfo], *, oneline: bool, graph: bool) -> None:
    """Print commits as `ckstore log` does: full entries or one line each, optionally with a graph of lanes."""
    prefixes = graph_prefixes(entries) if graph else [""] * len(entries)
    for prefix, e in zip(prefixes, entries):
        lead = f"{prefix} " if graph else ""
        metrics = _metrics(e)
        if oneline:
            out.print(f"{lead}[yellow]{e.id[:12]}[/]{_decor(e)} {escape(subject(e.message))}"
                      + (f"  [dim]{escape(metrics)}[/]" if metrics else ""))
            continue
        pad = prefix.replace("*", "|") + " " if graph else ""  # body lines continue every lane, as git does
        out.print(f"{lead}[yellow]commit {e.id}[/]{_decor(e)}")
        out.print(f"{pad}Author: {escape(e.author)}")
        out.print(f"{pad}Date:   {when(e.time)}")
        for p in e.dropped_parents:
            out.print(f"{pad}Parent: {p[:12]} (parent dropped by retention)")
        if e.step is not None:
            out.print(f"{pad}Step:   {e.step}")
        if metrics:
            out.print(f"{pad}Metrics: {escape(metrics)}")
        for ns, data in sorted(e.notes.items()):
            shown = "  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(data.items()))
            out.print(f"{pad}Notes:  {escape(f'[{ns}] {shown}')}")
        message = "\n".join(f"{pad}    {escape(line)}" for line in e.message.split("\n"))  # each line indented
        out.print(f"{pad}\n{message}\n{pad}")


def render_formatted(entries: list[CommitInfo], template: Callable[[dict, float], str], *, graph: bool,
                     now: float) -> None:
    """`log --format`: each commit through a compiled template (plain text, no markup), with graph lanes before
    its first line and continued beside the others."""
    prefixes = graph_prefixes(entries) if graph else [""] * len(entries)
    for prefix, e in zip(prefixes, entries):
        first, *rest = template(e.to_dict(), now).split("\n")
        pad = prefix.replace("*", "|") + " " if graph else ""
        typer.echo(f"{prefix} {first}" if graph else first)
        for line in rest:
            typer.echo(pad + line)


def _value(v: Any) -> str:
    return "-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def render_metric_log(entries: list[CommitInfo], metric: str, *, graph: bool) -> None:
    """`log --metric NAME`: one line per commit with its value of NAME ('-' where it has none)."""
    prefixes = graph_prefixes(entries) if graph else [""] * len(entries)
    for prefix, e in zip(prefixes, entries):
        lead = f"{prefix} " if graph else ""
        shown = f"{metric}={_value(metric_value(e, metric))}  {subject(e.message)}"
        out.print(f"{lead}[yellow]{e.id[:12]}[/]{_decor(e)}  {escape(shown)}")


def render_sparkline(metric: str, oldest_first: list[Any]) -> None:
    """A metric over the listed commits as one line: its sparkline (oldest to newest; a space where a commit has
    no value), then the lowest, the highest and the newest value."""
    nums = [v for v in oldest_first if is_number(v)]
    out.print(escape(f"{metric}  {sparkline(oldest_first)}  min {_value(min(nums))}  max {_value(max(nums))}  "
                     f"last {_value(nums[-1])}  ({len(nums)} of {len(oldest_first)} commits, oldest → newest)"))


def render_show(info: ShowInfo) -> None:
    """Print a commit's log entry, metadata, files, first 200 tensors, and logical/stored/new byte counts."""
    c = info.commit
    render_log([c], oneline=False, graph=False)
    out.print(f"Describe: {escape(info.describe)}" + (f"   Name: {escape(info.name)}" if info.name else ""))
    for section in (s for s in SECTIONS if s != "metrics"):  # metrics are shown in the log lines
        value = getattr(c.commit, section)
        if value:
            out.print(escape(f"{section}: {value}"))
    env = c.commit.env
    if env:
        pkgs = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
        out.print(f"env: Python {env.get('python')} on {env.get('platform')}; {pkgs}"
                  + (f"; git {env['git']['commit'][:12]}{' (dirty)' if env['git']['dirty'] else ''}"
                     if env.get("git") else ""))
    files = Table("file", "size", "blake3", box=None, pad_edge=False)
    for f in info.manifest.files:
        files.add_row(escape(f.path), human_bytes(f.size), f.hash.hex()[:16])
    _print_table(files)
    if info.manifest.tensors:
        tensors = Table("tensor", "dtype", "shape", "size", box=None, pad_edge=False)
        for t in info.manifest.tensors[:200]:
            tensors.add_row(escape(t.name), t.dtype, "×".join(map(str, t.shape)) or "scalar", human_bytes(t.nbytes))
        _print_table(tensors)
        if len(info.manifest.tensors) > 200:
            out.print(f"… and {len(info.manifest.tensors) - 200} more tensors (use --json for all)")
    ratio = info.logical_bytes / info.stored_bytes if info.stored_bytes else float("inf")
    out.print(f"logical {human_bytes(info.logical_bytes)}, stored {human_bytes(info.stored_bytes)} "
              f"({ratio:.2f}×), new in this commit {human_bytes(info.new_bytes)}")


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def render_diff(d: Any, *, stat: bool) -> None:
    """Print a diff: files and tensors added or removed, change statistics per tensor (unless `stat`), metadata."""
    s, t, f = d.summary, d.tensors, d.files
    out.print(f"diff {d.old[:12] or '(nothing)'} → {d.new[:12]}")
    for kind in ("added", "removed", "changed"):
        for path in f[kind]:
            out.print(f"  file {kind}: {escape(path)}")
    for name in t["added"]:
        out.print(f"  [green]+ {escape(name)}[/]")
    for name in t["removed"]:
        out.print(f"  [red]- {escape(name)}[/]")
    if t["changed"] and not stat:
        table = Table("tensor", "changed", "‖Δ‖", "‖Δ‖/‖old‖", "max|Δ|", "cosine", "nan/inf new", box=None,
                      pad_edge=False)
        for c in t["changed"]:
            if not c.get("comparable"):
                table.add_row(escape(c["name"]), escape(c.get("note", "")), "", "", "", "", "")
                continue
            table.add_row(escape(c["name"]), f"{c['frac_changed']:.1%}", _num(c["l2_delta"]), _num(c["rel_l2"]),
                          _num(c["max_abs"]), _num(c["cosine"]), f"{c['nan_appeared']}/{c['inf_appeared']}")
        out.print(table)
    elif t["changed"]:
        for c in t["changed"]:
            out.print(f"  ~ {escape(c['name'])}")
    metrics = {k: v for k, v in d.metadata.get("metrics", {}).items() if v["old"] != v["new"]}
    for k, v in metrics.items():
        delta = f" ({v['delta']:+.4g})" if v["delta"] is not None else ""
        out.print(f"  metric {escape(k)}: {_num(v['old'])} → {_num(v['new'])}{delta}")
    for section in ("step", "params", "seeds", "data", "extra", "env"):
        value = d.metadata.get(section)
        if section == "step" and value:
            out.print(f"  step: {value['old']} → {value['new']}")
        elif isinstance(value, dict) and value and section != "step":
            for k, v in value.items():
                out.print(escape(f"  {section}.{k}: {v['old']!r} → {v['new']!r}"))
    out.print(f"{s['tensors_changed']} tensors changed, {s['tensors_added']} added, {s['tensors_removed']} removed, "
              f"{s['tensors_unchanged']} unchanged; max ‖Δ‖/‖old‖ {_num(s['max_rel_l2'])}; "
              f"{human_bytes(s['stored_bytes_added'])} stored by the newer version")


def render_audit(entries: list[dict[str, Any]]) -> None:
    """Print audit-log entries as a table: sequence number, time, user, action, ref, old and new ids, message."""
    table = Table("#", "when", "who", "action", "ref", "old", "new", "message", box=None, pad_edge=False)
    for e in entries:
        table.add_row(str(e["seq"]), when(e["time"]), e["user"], e["action"], e["ref"], (e["old"] or "-")[:12],
                      (e["new"] or "-")[:12], escape(e["message"]))
    _print_table(table)


def render_lineage(chain: list[CommitInfo], metric: str | None) -> None:
    """One line per commit of a first-parent chain: id, step, the metric, the message."""
    for e in chain:
        value = metric_value(e, metric) if metric else None
        shown = f"{metric}={_value(value)}  " if metric else ""
        step = f"step {e.step:>7}  " if e.step is not None else ""
        out.print(escape(f"{e.id[:12]}  {step}{shown}{subject(e.message)}"))


def render_repair(done: Any) -> None:
    """What fsck --repair did: problems before, files quarantined, chunks salvaged and fetched, what is left."""
    before = len(done.before.problems)
    out.print(escape(f"repair: {before} problems found; {len(done.quarantined)} files moved to quarantine, "
                     f"{done.salvaged_chunks} intact chunks salvaged from them, {done.fetched_chunks} chunks and "
                     f"{done.fetched_objects} objects fetched"))
    for path in done.quarantined:
        out.print(escape(f"  quarantined {path}"))
    if done.missing_chunks or done.missing_objects:
        out.print(escape(f"not recovered: {done.missing_chunks} chunks, {done.missing_objects} objects "
                         "(fetch them with --from REMOTE, from a remote that has them)"))


def render_forget(result: Any) -> None:
    """The commits a retention policy looked at (kept with their rules, or dropped), and what gc would free."""
    table = Table("commit", "date", "step", "group", "", "why", box=None, pad_edge=False)
    for c in result.commits:
        table.add_row(c.id[:12], when(c.time)[:16], "" if c.step is None else str(c.step), escape(c.group),
                      "keep" if c.kept else "[red]drop[/]", escape(", ".join(c.reasons)))
    _print_table(table)
    verb = "would drop" if result.dry_run else "dropped"
    refs = f"; tags deleted: {', '.join(result.refs_deleted)}" if result.refs_deleted else ""
    out.print(f"policy: {escape(result.policy)}")
    out.print(f"kept {len(result.kept)}, {verb} {len(result.dropped)} commits{escape(refs)}; gc will free "
              f"{human_bytes(result.bytes_freed)}" + (" (run `ckstore gc`)" if not result.dry_run and result.dropped
                                                     else ""))


def render_du(report: Any) -> None:
    """`du`: a row per item, then where the bytes on disk go."""
    cost = any("monthly_cost" in r.extra for r in report.rows)
    replicas = any("replicas" in r.extra for r in report.rows)
    cols = [report.by, "commits", "logical", "stored", "unique", "shared"]
    table = Table(*cols, *(["$/month"] if cost else []), *(["replicas"] if replicas else []), box=None,
                  pad_edge=False)
    for r in report.rows:
        name = r.name[:12] if r.kind == "commit" else r.name
        cells = [escape(name), str(r.commits), human_bytes(r.logical), human_bytes(r.stored), human_bytes(r.unique),
                 human_bytes(r.shared)]
        if cost:
            cells.append(f"{r.extra.get('monthly_cost', 0):.4g}")
        if replicas:
            cells.append(str(r.extra.get("replicas", "")))
        table.add_row(*cells)
    _print_table(table)
    d = report.disk
    out.print(f"on disk: {human_bytes(d['total'])} = packs {human_bytes(d['packs'])} + objects "
              f"{human_bytes(d['objects'])}; referenced {human_bytes(d['referenced'])}, reclaimable by gc "
              f"{human_bytes(d['reclaimable'])}, pack overhead {human_bytes(d['pack_overhead'])}; in tombstones "
              f"{human_bytes(d['tombstones'])}")
    for warning in d.get("warnings", []):
        warn(warning)
