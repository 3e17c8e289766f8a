"""T7: commit and checkout on a full filesystem (a small tmpfs; needs root): a clean error, nothing changed."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckstore import Repo


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def ck(*args):
    return subprocess.run([shutil.which("ckstore"), *map(str, args)], capture_output=True, text=True)


def test_commit_and_checkout_on_a_full_disk(small_fs, tmp_path):
    small, huge = tmp_path / "small.safetensors", tmp_path / "huge.safetensors"
    save_file({"a": np.ones(1000, np.float32)}, small)
    rng = np.random.default_rng(0)
    save_file({f"t{i}": rng.standard_normal(1_000_000).astype(np.float32) for i in range(8)}, huge)  # 32 MB
    repo_dir = small_fs / "repo"
    Repo.init(repo_dir).close()
    assert ck("-C", repo_dir, "commit", small, "-m", "fits").returncode == 0
    r = ck("-C", repo_dir, "commit", huge, "-m", "does not fit")
    assert r.returncode == 1 and r.stderr.startswith("error: No space left on device"), r.stderr
    assert "Traceback" not in r.stderr
    with Repo.open(repo_dir) as repo:
        assert [c.message for c in repo.log()] == ["fits"]
        assert repo.fsck(read_data=True).ok
        assert list((repo.dir / "tmp").iterdir()) == []  # temp space released
    filler = small_fs / "filler"
    free = shutil.disk_usage(small_fs).free
    filler.write_bytes(b"\0" * max(0, free - 2048))
    with Repo.open(repo_dir) as repo:
        dest = small_fs / "out"
        with pytest.raises(OSError):
            repo.checkout("HEAD", dest)
        assert not dest.exists() or list(dest.iterdir()) == []  # nothing half-written under any name
    filler.unlink()
    with Repo.open(repo_dir) as repo:  # works once space is freed
        repo.checkout("HEAD", small_fs / "out", force=True)
        assert (small_fs / "out/small.safetensors").read_bytes() == small.read_bytes()


# -- ENOSPC at every I/O step (tests/enospc_shim.c, LD_PRELOAD into the real CLI process) ------------------------------
# The k-th write-like call under the faulted root (write, pwrite, writev, fsync, fdatasync, ftruncate, rename, link,
# mkdir, open with O_CREAT; Python's and LMDB's alike) and every one after it fails with ENOSPC, for k = 1..N where N
# is the count of a clean run. tests/soak/test_soak_io.py sweeps every k; the CI tier takes a few.

import sys  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_reliability as rel  # noqa: E402
from crash_worker import make_checkpoint, tree_bytes  # noqa: E402

SHIM_SRC = Path(__file__).resolve().parents[1] / "enospc_shim.c"


def build_shim(where: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("a C compiler is needed to build the ENOSPC shim")
    out = where / "enospc_shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SHIM_SRC), "-ldl"], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    return build_shim(tmp_path_factory.mktemp("shim"))


def run_full(shim_so: Path, root: Path, at: int, *args, count: Path | None = None) -> subprocess.CompletedProcess:
    """`ckstore ARGS` with the disk under `root` full from its `at`-th write-like call on (0: never)."""
    env = dict(rel.worker_env(), LD_PRELOAD=str(shim_so), CKFAULT_ROOT=os.path.realpath(root), CKFAULT_AT=str(at))
    if count is not None:
        env["CKFAULT_COUNT"] = str(count)
    return subprocess.run([shutil.which("ckstore"), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def assert_clean_error(p: subprocess.CompletedProcess, what: str) -> None:
    assert p.returncode not in (0, 137) and p.returncode > 0, f"{what}: rc {p.returncode}\n{p.stderr[-1500:]}"
    assert "Traceback" not in p.stderr and "Exception" not in p.stderr, f"{what}: {p.stderr[-1500:]}"
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith(("warning:", "hint:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: not one error line: {p.stderr[-1500:]}"


@dataclass
class DiskFullCase:
    """One command swept: `prepare(case_dir)` builds a fresh copy and returns (root to fault, ckstore args);
    `check_failed(case_dir)` and `check_redone(case_dir)` are the oracles."""

    name: str
    prepare: object
    check_failed: object
    check_redone: object
    base: dict = field(default_factory=dict)


def count_steps(shim_so: Path, case: DiskFullCase, work: Path) -> int:
    root, args = case.prepare(work)
    counter = work.parent / f"{work.name}.count"
    p = run_full(shim_so, root, 0, *args, count=counter)
    assert p.returncode == 0, p.stderr
    case.check_redone(work)
    shutil.rmtree(work)
    return int(counter.read_text())


def full_at(shim_so: Path, case: DiskFullCase, k: int, work: Path) -> str:
    """The command with the disk full from step k: a clean error, nothing changed; then it works without the fault.
    Returns how the failed run ended ("unchanged", "done" when only the last durability step failed, or "landed"
    when only cache writes were refused and the command succeeded)."""
    root, args = case.prepare(work)
    p = run_full(shim_so, root, k, *args)
    if p.returncode == 0:  # only cache writes were refused (they are skipped): the command landed whole
        assert "Traceback" not in p.stderr, p.stderr[-1500:]
        case.check_redone(work)
        shutil.rmtree(work)
        return "landed"
    assert_clean_error(p, f"{case.name} ENOSPC from step {k}")
    ended = case.check_failed(work)
    if ended == "done":  # the last step (the ref's directory fsync) failed after the ref moved: said so
        assert "the change is made" in p.stderr, p.stderr[-1500:]
        case.check_redone(work)  # and the change is whole: nothing to run again
        shutil.rmtree(work)
        return ended
    p = subprocess.run([shutil.which("ckstore"), *map(str, args)], capture_output=True, text=True,
                       env=rel.worker_env(), timeout=300)
    if ended == "unchanged" or p.returncode != 0:
        assert p.returncode == 0, f"{case.name} after ENOSPC at {k}: the command failed once space was back: " \
                                  f"{p.stderr[-1500:]}"
    case.check_redone(work)
    shutil.rmtree(work)
    return ended


def _tmp_empty(repo: Path) -> None:
    left = sorted(p.name for p in (repo / ".ckstore" / "tmp").iterdir())
    assert left == [], f"tmp/ not emptied: {left}"


def commit_case(base: Path) -> DiskFullCase:
    """Commit `new` to a repository holding b0 (several new packs, objects and fan-out directories)."""
    srcs = {m: make_checkpoint(base / "src" / m, 60 + i, shared_seed=6) for i, m in enumerate(["b0", "new"])}
    with Repo.init(base / "tpl", chunk_size=rel.CHUNK) as r:
        rel.commit(r, srcs["b0"], "b0")

    def prepare(work: Path):
        shutil.copytree(base / "tpl", work / "repo")
        return work / "repo", ["-C", work / "repo", "commit", srcs["new"], "-m", "new"]

    def check_failed(work: Path) -> str:
        with Repo.open(work / "repo") as r:
            report = r.fsck(read_data=True)
            assert report.ok, [str(x) for x in report.problems]
            history = [c.message for c in r.log()]
            assert history in (["b0"], ["new", "b0"]), history
        _tmp_empty(work / "repo")
        return "unchanged" if history == ["b0"] else "done"

    def check_redone(work: Path) -> None:
        with Repo.open(work / "repo") as r:
            assert r.fsck(read_data=True).ok
            assert [c.message for c in r.log()] == ["new", "b0"]
            for c in r.log():
                rel.assert_checkout_identical(r, c.id, srcs[c.message], work / f"co-{c.message}")
        _tmp_empty(work / "repo")

    return DiskFullCase("commit", prepare, check_failed, check_redone)


def checkout_case(base: Path) -> DiskFullCase:
    """Check out a 4-file commit into a new directory (the destination's disk is the full one)."""
    src = make_checkpoint(base / "src", 61)
    (src / "notes.txt").write_text("a small opaque file\n")
    with Repo.init(base / "tpl", chunk_size=rel.CHUNK) as r:
        rel.commit(r, src, "one")

    def prepare(work: Path):
        shutil.copytree(base / "tpl", work / "repo")
        (work / "out").mkdir()
        return work / "out", ["-C", work / "repo", "checkout", "HEAD", "-o", work / "out" / "dest"]

    def check_failed(work: Path) -> str:
        dest = work / "out" / "dest"
        assert rel.leftovers(work / "out") == [], rel.leftovers(work / "out")
        if dest.exists():  # nothing half-written under a final name: whatever is there is whole
            want = tree_bytes(src)
            for name, data in tree_bytes(dest).items():
                assert want.get(name) == data, f"{name} is not the committed file"
            shutil.rmtree(dest)
        with Repo.open(work / "repo") as r:
            assert r.fsck(read_data=True).ok
        return "unchanged"

    def check_redone(work: Path) -> None:
        assert tree_bytes(work / "out" / "dest") == tree_bytes(src)

    return DiskFullCase("checkout", prepare, check_failed, check_redone)


def pull_case(base: Path) -> DiskFullCase:
    """B (a clone at b1) pulls `new` from a directory remote; B's disk is the full one."""
    srcs = {m: make_checkpoint(base / "src" / m, 62 + i, shared_seed=9) for i, m in enumerate(["b1", "new"])}
    import ckstore
    with Repo.init(base / "a", chunk_size=rel.CHUNK) as a:
        ids = {"b1": rel.commit(a, srcs["b1"], "b1")}
        a.remote_add("origin", str(base / "remote"))
        a.push("origin", ["main"])
        ckstore.clone(str(base / "remote"), base / "tpl").close()
        ids["new"] = rel.commit(a, srcs["new"], "new")
        a.push("origin", ["main"])
    remote_url = base / "remote"

    def prepare(work: Path):
        shutil.copytree(base / "tpl", work / "b")
        raw = json.loads((work / "b" / ".ckstore" / "remotes.json").read_text())
        assert raw["origin"]["url"] == str(remote_url)
        return work / "b", ["-C", work / "b", "pull", "origin", "main"]

    def check_failed(work: Path) -> str:
        with Repo.open(work / "b") as r:
            report = r.fsck(read_data=True)
            assert report.ok, [str(x) for x in report.problems]
            main = r.resolve("main")
            assert main in (ids["b1"], ids["new"])
            assert r.engine.refs.read("refs/remotes/origin/main").hex() in (ids["b1"], ids["new"])
        _tmp_empty(work / "b")
        return "unchanged" if main == ids["b1"] else "done"

    def check_redone(work: Path) -> None:
        with Repo.open(work / "b") as r:
            assert r.fsck(read_data=True).ok and r.resolve("main") == ids["new"]
            for m in ("b1", "new"):
                rel.assert_checkout_identical(r, ids[m], srcs[m], work / f"co-{m}")
        _tmp_empty(work / "b")

    return DiskFullCase("pull", prepare, check_failed, check_redone)


CASES = {"commit": commit_case, "checkout": checkout_case, "pull": pull_case}


@pytest.mark.parametrize("name", sorted(CASES))
def test_enospc_at_some_io_steps(shim: Path, tmp_path: Path, name: str) -> None:
    """CI tier: the first step and three spread over each command (and the last of a checkout)."""
    case = CASES[name](tmp_path / "base")
    steps = count_steps(shim, case, tmp_path / "count")
    assert steps >= 5, f"{name}: only {steps} write-like calls counted"
    for k in sorted({1, steps // 3, steps // 2, 2 * steps // 3} | ({steps} if name == "checkout" else set())):
        full_at(shim, case, k, tmp_path / f"k{k}")


@pytest.mark.parametrize("name", ["commit", "pull"])
def test_enospc_at_the_last_step_after_the_change_landed(shim: Path, tmp_path: Path, name: str) -> None:
    """The last write-like calls come after the change landed (the ref directory's fsync, the LMDB commits-cache
    write at close): a refusal there must not be reported as "the repository is unchanged"."""
    case = CASES[name](tmp_path / "base")
    steps = count_steps(shim, case, tmp_path / "count")
    # landed either way: the cache write skipped (exit 0), or the ref moved and the command says so (exit 1)
    assert full_at(shim, case, steps, tmp_path / f"k{steps}") in ("landed", "done")
