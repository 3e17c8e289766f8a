"""The `ckstore` command line, exercised the way a user runs it.

Most tests drive `ckstore.cli.app` in-process with typer's CliRunner (fast). Error formatting (`error:` / `hint:`
lines, exit codes) goes through `ckstore.cli.main` in-process, exactly what the console script calls; a few tests
run the installed `ckstore` script in a real subprocess to pin exit codes and stderr end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import blake3
import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from ckstore import cli
from ckstore.cli import app
from conftest import make_safetensors

AUTHOR = "tester@ci"
CKSTORE = shutil.which("ckstore")
runner = CliRunner()
needs_script = pytest.mark.skipif(CKSTORE is None, reason="the ckstore console script is not installed")


# ------------------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts in its own empty directory, with no repository chosen by the environment."""
    monkeypatch.chdir(tmp_path)
    for var in ("CKSTORE_DIR", "CKSTORE_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CKSTORE_AUTHOR", AUTHOR)


def ck(*args: object, ok: bool = True):
    """Run `ckstore ARGS...` in-process; by default the command must succeed."""
    result = runner.invoke(app, [str(a) for a in args], prog_name="ckstore")
    if ok:
        assert result.exit_code == 0, f"{args}: {result.output}{result.exception!r}"
    return result


def ckj(*args: object):
    """Run `ckstore ARGS... --json` and parse its standard output."""
    return json.loads(ck(*args, "--json").stdout)


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def ck_main(capsys: pytest.CaptureFixture):
    """Run `ckstore ARGS...` through `ckstore.cli.main` (the console-script entry point) in-process."""
    def run(*args: object) -> Run:
        capsys.readouterr()
        saved = sys.argv
        sys.argv = ["ckstore", *map(str, args)]
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = saved
        out, err = capsys.readouterr()
        return Run(code, out, err)
    return run


def run_script(*args: object, cwd: Path, env: dict | None = None, timeout: float = 120):
    """The installed console script in a real subprocess."""
    return subprocess.run([CKSTORE, *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def assert_error(r: Run, code: int, *needles: str, hint: str | None = None) -> list[str]:
    """A clean failure: the exit code, one `error: ...` line on stderr, then a `hint: ...` line (required, and
    containing `hint`, unless hint is None), nothing on stdout and no traceback."""
    assert r.code == code, r
    assert "Traceback" not in r.err + r.out, r.err
    lines = r.err.strip().splitlines()
    assert lines and lines[0].startswith("error: "), r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), r.err
    if hint is not None:
        assert len(lines) == 2 and hint in lines[1], (hint, r.err)
    assert r.out == "", r.out
    return lines


def usage_error(r: Run, *needles: str) -> None:
    """A command-line usage error: exit 2, click's message on stderr, no traceback."""
    assert r.code == 2, r
    assert "Traceback" not in r.err + r.out
    assert "Error:" in r.err, r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)


def repo_files(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under root/.ckstore, except the rebuildable cache/."""
    d = root / ".ckstore"
    out: dict[str, bytes | None] = {}
    for p in d.rglob("*"):
        rel = p.relative_to(d)
        if rel.parts[0] == "cache":
            continue
        out[rel.as_posix()] = p.read_bytes() if p.is_file() else None
    return out


def model_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"embed.weight": rng.standard_normal((16, 8)).astype(np.float32),
            "head.bias": np.arange(4, dtype=np.int64) + seed,
            "norm.scale": rng.standard_normal(8).astype(np.float16)}


def make_checkpoint_dir(root: Path, seed: int = 0) -> Path:
    """An HF-style checkpoint directory with a nested subdirectory and non-tensor files."""
    make_safetensors(root / "model.safetensors", model_tensors(seed))
    (root / "config.json").write_text(json.dumps({"layers": 2, "seed": seed}, indent=2) + "\n")
    make_safetensors(root / "sub" / "extra.safetensors", {"w": np.full((3, 5), seed, np.float32)})
    (root / "sub" / "notes.bin").write_bytes(bytes(range(256)) * 3 + bytes([seed]))
    return root


def file_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def commit_series(n: int, prefix: str = "c", **kw: object) -> list[str]:
    """n commits of a small, changing safetensors file on the current branch; returns their ids, oldest first."""
    ids = []
    for i in range(n):
        f = make_safetensors(Path(f"{prefix}{i}") / "model.safetensors", {"w": np.full(8, i, np.float32)})
        extra = [str(x) for kv in kw.items() for x in kv]
        ids.append(ckj("commit", f, "-m", f"{prefix}{i}", "--step", i, *extra)["id"])
    return ids


@pytest.fixture
def initialized(tmp_path: Path) -> Path:
    ck("init")
    return tmp_path


# --------------------------------------------------------------------------------------------------------------- init


def test_init_creates_repository_in_cwd(tmp_path: Path) -> None:
    r = ck("init")
    assert f"Initialized empty ckstore repository in {(tmp_path / '.ckstore').resolve()}" in r.stdout
    d = tmp_path / ".ckstore"
    config = json.loads((d / "config").read_text())
    assert config["format"] == "ckstore" and config["version"] == 3
    assert (d / "HEAD").read_text() == "ref: refs/heads/main\n"
    for sub in ("refs/heads", "refs/tags", "objects", "packs", "logs"):
        assert (d / sub).is_dir(), sub
    assert ck("log").stdout == ""
    assert ckj("log") == []
    assert ckj("branch") == [] and ckj("tag") == [] and ckj("audit") == []


def test_init_directory_argument(tmp_path: Path) -> None:
    ck("init", "runs/exp1")
    assert (tmp_path / "runs" / "exp1" / ".ckstore" / "config").is_file()
    assert not (tmp_path / ".ckstore").exists()


def test_reinit_is_refused_and_changes_nothing(tmp_path: Path, ck_main) -> None:
    ck("init", "--require", "metrics.loss:number")
    before = repo_files(tmp_path)
    r = ck_main("init")
    assert_error(r, 1, "already exists", hint="")
    r = ck_main("init", "--require", "data.version:string")
    assert_error(r, 1, "already exists")
    assert repo_files(tmp_path) == before


def test_init_require_and_chunk_size_go_into_config(tmp_path: Path) -> None:
    ck("init", "--require", "metrics.val_loss:number", "--require", "data.version:string", "--chunk-size", 4096)
    config = json.loads((tmp_path / ".ckstore" / "config").read_text())
    assert config["schema"]["required"] == {"metrics.val_loss": "number", "data.version": "string"}
    assert config["chunk_size"] == 4096


def test_init_bad_require_spec(tmp_path: Path, ck_main) -> None:
    r = ck_main("init", "--require", "metrics.val_loss")
    assert_error(r, 2, "not KEY:TYPE")
    r = ck_main("init", "--require", "metrics.val_loss:float")
    assert_error(r, 1, "'float'", "number", "string")
    assert not (tmp_path / ".ckstore").exists()


# --------------------------------------------------------------------------------------------- finding the repository


def test_C_option_runs_as_if_started_in_dir(tmp_path: Path) -> None:
    ck("-C", "proj", "init")
    proj = tmp_path / "proj"
    assert (proj / ".ckstore" / "config").is_file()
    make_checkpoint_dir(proj / "ckpt")
    (proj / "meta.json").write_text(json.dumps({"data": {"version": "v7"}}))
    r = ck("-C", "proj", "commit", "ckpt", "-m", "via -C", "--meta-file", "meta.json")
    assert "via -C" in r.stdout
    entry = json.loads(ck("-C", "proj", "log", "--json").stdout)[0]
    assert entry["message"] == "via -C" and entry["meta"]["data"] == {"version": "v7"}
    # -o is relative to DIR too
    ck("-C", "proj", "checkout", "HEAD", "-o", "restored")
    assert file_tree(proj / "restored") == file_tree(proj / "ckpt")
    assert not (tmp_path / "restored").exists()
    # DIR may be anywhere inside the repository, relative or absolute
    assert ck("-C", proj / "ckpt" / "sub", "log", "--oneline").stdout.count("\n") == 1
    assert ck("-C", str(proj.resolve()), "ls", "--json").exit_code == 0


def test_C_option_with_a_missing_directory_is_an_error(initialized: Path, ck_main) -> None:
    commit_series(1)
    r = ck_main("-C", "no-such-dir", "log")  # must not fall back to the repository around it
    assert r.code != 0 and "no-such-dir" in r.err and "Traceback" not in r.err
    assert r.out == ""


def test_CKSTORE_DIR_selects_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ck_main) -> None:
    ck("init", "store")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("CKSTORE_DIR", str(tmp_path / "store"))
    f = make_safetensors(work / "model.safetensors", model_tensors())
    ck("commit", "model.safetensors", "-m", "from env")  # the source is relative to the working directory
    assert [e["message"] for e in ckj("log")] == ["from env"]
    assert any((tmp_path / "store" / ".ckstore" / "objects").iterdir())
    assert not (work / ".ckstore").exists()
    assert ck("cat", "HEAD", "model.safetensors").stdout_bytes == f.read_bytes()
    # -C wins over the environment
    ck("init", tmp_path / "other")
    assert ck("-C", tmp_path / "other", "log").stdout == ""
    monkeypatch.setenv("CKSTORE_DIR", str(tmp_path / "nowhere"))
    assert_error(ck_main("log"), 1, "CKSTORE_DIR=", "is not a ckstore repository", hint="ckstore init")


def test_repository_found_by_walking_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ck("init")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    make_safetensors(deep / "m.safetensors", model_tensors())
    ck("commit", "m.safetensors", "-m", "from deep")
    assert not (deep / ".ckstore").exists()
    monkeypatch.chdir(tmp_path / "a")
    assert [e["message"] for e in ckj("log")] == ["from deep"]
    assert [f["path"] for f in ckj("ls")] == ["m.safetensors"]


def _inside_a_repository(path: Path) -> bool:
    return any((d / ".ckstore" / "config").is_file() for d in (path, *path.parents))


NEEDS_REPO = [["log"], ["show"], ["commit", "x.safetensors", "-m", "m"], ["checkout", "HEAD", "-o", "out"],
              ["branch"], ["switch", "dev"], ["tag"], ["ls"], ["cat", "HEAD", "x"], ["fsck"], ["audit"]]


@pytest.mark.parametrize("args", NEEDS_REPO, ids=lambda a: a[0])
def test_not_a_repository(tmp_path: Path, ck_main, args: list[str]) -> None:
    if _inside_a_repository(tmp_path):
        pytest.skip("the test directory is inside a ckstore repository")
    lines = assert_error(ck_main(*args), 1, "not a ckstore repository", hint="ckstore init")
    assert str(tmp_path.resolve()) in lines[0]


@needs_script
def test_not_a_repository_real_process(tmp_path: Path) -> None:
    if _inside_a_repository(tmp_path):
        pytest.skip("the test directory is inside a ckstore repository")
    r = run_script("log", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("error: not a ckstore repository")
    assert lines[1].startswith("hint: ") and "-C DIR" in lines[1] and "CKSTORE_DIR" in lines[1]


# ------------------------------------------------------------------------------------------------------------- commit


def test_commit_file_is_stored_under_its_base_name(initialized: Path) -> None:
    f = make_safetensors(initialized / "out" / "step-1" / "model.safetensors", model_tensors())
    r = ck("commit", f, "-m", "first")
    head = ckj("log")[0]
    assert r.stdout.splitlines()[0] == f"[main {head['id'][:12]}] first"
    assert "1 files, 3 tensors" in r.stdout
    assert [x["path"] for x in ckj("ls", "HEAD")] == ["model.safetensors"]
    assert ck("cat", "HEAD", "model.safetensors").stdout_bytes == f.read_bytes()


def test_commit_directory_contents_relative_to_it(initialized: Path) -> None:
    src = make_checkpoint_dir(initialized / "out" / "checkpoint-500")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/x\n")  # VCS internals are never committed
    ck("commit", "out/checkpoint-500", "-m", "dir")
    listed = ckj("ls")
    assert [x["path"] for x in listed] == ["config.json", "model.safetensors", "sub/extra.safetensors",
                                           "sub/notes.bin"]
    assert {x["path"]: x["size"] for x in listed} == {
        k: len(v) for k, v in file_tree(src).items() if not k.startswith(".git/")}


def test_commit_json_and_deduplication(initialized: Path) -> None:
    f = make_safetensors("model.safetensors", model_tensors())
    first = ckj("commit", f, "-m", "one", "--step", 10, "--metric", "loss=0.5")
    assert first["message"] == "one" and first["step"] == 10 and first["metrics"] == {"loss": 0.5}
    assert first["parents"] == [] and first["author"] == AUTHOR and len(first["id"]) == 64
    assert first["logical_bytes"] == f.stat().st_size and first["new_bytes"] > 0
    again = ckj("commit", f, "-m", "same bytes")
    assert again["parents"] == [first["id"]]
    assert again["logical_bytes"] == first["logical_bytes"]
    assert again["new_bytes"] == 0  # every chunk is shared with the parent


def test_commit_typed_metadata(initialized: Path) -> None:
    f = make_safetensors("model.safetensors", model_tensors())
    ck("commit", f, "-m", "typed", "--step", 500,
       "--meta", "params.lr=3e-4", "--meta", "params.layers=12", "--meta", "params.optim.name=adamw",
       "--meta", "params.optim.betas=[0.9, 0.95]", "--meta", "flag=true", "--meta", "off=false",
       "--meta", "data.version=v3", "--meta", "seeds.numpy=0", "--meta", "run=bert-base",
       "--metric", "val_loss=0.41", "--metric", "tokens=1000000")
    e = ckj("log")[0]
    assert e["step"] == 500
    params = e["params"]
    assert params == {"lr": 3e-4, "layers": 12, "optim": {"name": "adamw", "betas": [0.9, 0.95]}}
    assert type(params["lr"]) is float and type(params["layers"]) is int
    assert e["metrics"] == {"val_loss": 0.41, "tokens": 1000000}
    assert e["meta"]["data"] == {"version": "v3"}
    assert e["meta"]["seeds"] == {"numpy": 0}
    extra = e["meta"]["extra"]
    assert extra == {"flag": True, "off": False, "run": "bert-base"}
    assert extra["flag"] is True and extra["off"] is False
    assert e["meta"]["env"]["python"]  # captured automatically


META = {"params": {"lr": 0.0003, "layers": 12, "optim": {"name": "adamw"}}, "data": {"version": "v3"},
        "seeds": {"numpy": 0}, "metrics": {"val_loss": 0.5}, "step": 100, "run": "exp-1"}
META_TOML = """\
step = 100
run = "exp-1"

[params]
lr = 0.0003
layers = 12

[params.optim]
name = "adamw"

[data]
version = "v3"

[seeds]
numpy = 0

[metrics]
val_loss = 0.5
"""


@pytest.mark.parametrize("fmt", ["json", "yaml", "yml", "toml"])
def test_commit_meta_file(initialized: Path, fmt: str) -> None:
    meta_file = initialized / f"meta.{fmt}"
    text = {"json": json.dumps(META), "yaml": yaml.safe_dump(META), "yml": yaml.safe_dump(META),
            "toml": META_TOML}[fmt]
    meta_file.write_text(text)
    f = make_safetensors("model.safetensors", model_tensors())
    ck("commit", f, "-m", f"from {fmt}", "--meta-file", meta_file)
    e = ckj("log")[0]
    assert e["params"] == META["params"] and type(e["params"]["layers"]) is int
    assert e["meta"]["data"] == {"version": "v3"} and e["meta"]["seeds"] == {"numpy": 0}
    assert e["metrics"] == {"val_loss": 0.5} and e["step"] == 100
    assert e["meta"]["extra"] == {"run": "exp-1"}
    # the command line wins over the file, key by key
    ck("commit", f, "-m", "override", "--meta-file", meta_file, "--meta", "params.lr=1e-3",
       "--metric", "val_loss=0.25", "--step", 200)
    e = ckj("log")[0]
    assert e["params"] == {"lr": 1e-3, "layers": 12, "optim": {"name": "adamw"}}
    assert e["metrics"] == {"val_loss": 0.25} and e["step"] == 200


def test_bad_metadata_is_refused_and_nothing_written(initialized: Path, ck_main) -> None:
    f = make_safetensors("model.safetensors", model_tensors())
    commit_series(1)
    before = repo_files(initialized)
    bad_json = initialized / "bad.json"
    bad_json.write_text("{not json")
    a_list = initialized / "list.yaml"
    a_list.write_text("- 1\n- 2\n")
    cases = [
        (["--metric", "val_loss=abc"], "metric 'val_loss' must be a number"),
        (["--metric", "val_loss=true"], "must be a number"),
        (["--meta", "novalue"], "is not KEY=VALUE"),
        (["--meta", "params..lr=1"], "bad metadata key"),
        (["--meta", "step=ten"], "step must be an integer"),
        (["--meta", "params=3"], "params must be a mapping"),
        (["--meta-file", bad_json], "not valid json"),
        (["--meta-file", a_list], "must be a mapping"),
        (["--meta-file", initialized / "missing.json"], "cannot read metadata file"),
    ]
    for extra, message in cases:
        r = ck_main("commit", f, "-m", "bad", *extra)
        assert_error(r, 1, message, hint=None)
        assert repo_files(initialized) == before, extra
    assert len(ckj("log")) == 1


def test_schema_refuses_commit_without_required_metadata(tmp_path: Path, ck_main) -> None:
    ck("init", "--require", "metrics.val_loss:number", "--require", "data.version:string")
    f = make_safetensors("model.safetensors", model_tensors())
    before = repo_files(tmp_path)
    r = ck_main("commit", f, "-m", "no metadata")
    assert_error(r, 1, "schema", "metrics.val_loss is required (number)", "data.version is required (string)",
                 hint="--metric")
    assert repo_files(tmp_path) == before
    r = ck_main("commit", f, "-m", "half", "--metric", "val_loss=0.3")
    assert_error(r, 1, "data.version is required")
    assert "val_loss" not in r.err.splitlines()[0].split("schema:")[1]
    r = ck_main("commit", f, "-m", "wrong type", "--metric", "val_loss=0.3", "--meta", "data.version=3")
    assert_error(r, 1, "data.version must be string, got 3")
    assert repo_files(tmp_path) == before
    assert ckj("log") == [] and ckj("audit") == []
    ck("commit", f, "-m", "complete", "--metric", "val_loss=0.3", "--meta", "data.version=v3")
    assert [e["message"] for e in ckj("log")] == ["complete"]


def test_malformed_checkpoint_is_refused_and_nothing_written(initialized: Path, ck_main) -> None:
    commit_series(1)
    before = repo_files(initialized)
    bad = initialized / "broken.safetensors"
    bad.write_bytes(b"\xff" * 8 + b"{not a header")
    r = ck_main("commit", bad, "-m", "broken")
    assert_error(r, 1, "broken.safetensors", hint="")
    r = ck_main("commit", initialized / "does-not-exist", "-m", "missing")
    assert r.code != 0 and "no such file or directory" in r.err and "Traceback" not in r.err
    assert repo_files(initialized) == before


def test_commit_to_branch_and_tag(initialized: Path, ck_main) -> None:
    base = commit_series(2)
    f = make_safetensors("adapter/adapter.safetensors", {"lora_a": np.ones((4, 2), np.float32)})
    r = ck("commit", "adapter", "-m", "lora r=8", "--branch", "lora-exp", "--tag", "lora-v1")
    assert r.stdout.startswith("[lora-exp ")
    lora = ckj("log", "lora-exp")
    assert [e["message"] for e in lora] == ["lora r=8", "c1", "c0"]
    assert lora[0]["parents"] == [base[1]]
    assert ckj("log", "lora-v1", "-n", 1)[0]["id"] == lora[0]["id"]
    assert ckj("log", "main", "-n", 1)[0]["id"] == base[1]  # main did not move
    assert {b["name"]: b["current"] for b in ckj("branch")} == {"lora-exp": False, "main": True}
    # an existing tag is refused before anything is written
    before = repo_files(initialized)
    r = ck_main("commit", f, "-m", "again", "--tag", "lora-v1")
    assert_error(r, 1, "tag 'lora-v1' already exists", hint="tags never move")
    assert repo_files(initialized) == before
    r = ck_main("commit", f, "-m", "bad branch", "--branch", "bad..name")
    assert_error(r, 2, "invalid ref name")
    assert repo_files(initialized) == before


# ---------------------------------------------------------------------------------------------------------------- log


def test_log_json_newest_first(initialized: Path) -> None:
    ids = commit_series(3, **{"--metric": "loss=0.5"})
    entries = ckj("log")
    assert [e["id"] for e in entries] == ids[::-1]
    for e in entries:
        assert {"id", "parents", "message", "author", "time", "step", "metrics", "params", "meta"} <= set(e)
        assert {"data", "seeds", "env", "extra"} <= set(e["meta"])
        assert e["author"] == AUTHOR and e["metrics"] == {"loss": 0.5}
    assert [e["parents"] for e in entries] == [[ids[1]], [ids[0]], []]
    assert [e["step"] for e in entries] == [2, 1, 0]
    assert [e["message"] for e in entries] == ["c2", "c1", "c0"]
    assert entries[0]["time"] >= entries[1]["time"] >= entries[2]["time"]
    assert [e["id"] for e in ckj("log", "-n", 2)] == ids[:0:-1]
    assert [e["id"] for e in ckj("log", "HEAD~1")] == [ids[1], ids[0]]
    assert [e["id"] for e in ckj("log", ids[0])] == [ids[0]]


def test_log_human_formats(initialized: Path) -> None:
    ids = commit_series(3, **{"--metric": "val_loss=0.25"})
    lines = ck("log", "--oneline").stdout.splitlines()
    assert len(lines) == 3
    for line, cid, msg in zip(lines, ids[::-1], ["c2", "c1", "c0"]):
        assert line.startswith(cid[:12]) and msg in line and "val_loss=0.25" in line
    assert "(main)" in lines[0]
    assert len(ck("log", "--oneline", "-n", 1).stdout.splitlines()) == 1
    full = ck("log").stdout
    for cid in ids:
        assert f"commit {cid}" in full
    assert full.count(f"Author: {AUTHOR}") == 3
    assert "Step:   2" in full and "Metrics: val_loss=0.25" in full and "Date:" in full


def test_log_graph_all_shows_diverging_branches(initialized: Path) -> None:
    c0, c1 = commit_series(2)
    ck("branch", "exp", "HEAD~1")
    f = make_safetensors("e/model.safetensors", {"w": np.full(8, 99, np.float32)})
    ck("commit", f, "-m", "on-exp", "--branch", "exp")
    f = make_safetensors("m/model.safetensors", {"w": np.full(8, 42, np.float32)})
    ck("commit", f, "-m", "on-main")
    lines = ck("log", "--graph", "--all", "--oneline").stdout.splitlines()
    by_msg = {line.rsplit(" ", 1)[-1]: line for line in lines}
    assert set(by_msg) == {"on-main", "on-exp", "c1", "c0"}
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["on-main", "on-exp", "c1", "c0"]
    assert by_msg["on-main"].startswith("* ") and "(main)" in by_msg["on-main"]
    assert by_msg["on-exp"].startswith("| * ") and "(exp)" in by_msg["on-exp"]
    assert by_msg["c1"].startswith("* | ")
    assert by_msg["c0"].startswith("* ") and not by_msg["c0"].startswith("* |")
    # without --all only HEAD's history; a branch name gives that branch's history
    assert "on-exp" not in ck("log", "--oneline").stdout
    exp = [e["message"] for e in ckj("log", "exp")]
    assert exp == ["on-exp", "c0"]
    full = ck("log", "--graph", "--all").stdout.splitlines()
    at = next(i for i, line in enumerate(full) if "(exp)" in line)
    assert full[at].startswith("| * commit ")
    assert full[at + 1].startswith("| | Author: ")  # the body keeps both lanes


# --------------------------------------------------------------------------------------------------------------- show


def test_show_json(initialized: Path) -> None:
    src = make_checkpoint_dir(initialized / "ckpt")
    cid = ckj("commit", src, "-m", "show me")["id"]
    info = ckj("show", "HEAD")
    assert info["id"] == cid and info["message"] == "show me"
    tree = file_tree(src)
    assert info["logical_bytes"] == sum(len(b) for b in tree.values())
    assert 0 < info["stored_bytes"] and info["new_bytes"] == info["stored_bytes"]
    assert [(f["path"], f["size"], f["hash"]) for f in info["files"]] == [
        (p, len(b), blake3.blake3(b).hexdigest()) for p, b in sorted(tree.items())]
    tensors = {(t["file"], t["name"]): (t["dtype"], t["shape"], t["nbytes"]) for t in info["tensors"]}
    assert tensors == {("model.safetensors", "embed.weight"): ("F32", [16, 8], 512),
                       ("model.safetensors", "head.bias"): ("I64", [4], 32),
                       ("model.safetensors", "norm.scale"): ("F16", [8], 16),
                       ("sub/extra.safetensors", "w"): ("F32", [3, 5], 60)}
    # a second checkpoint that changes one tensor stores only that tensor anew
    make_safetensors(src / "sub" / "extra.safetensors", {"w": np.full((3, 5), 7, np.float32)})
    ck("commit", src, "-m", "one tensor changed")
    info2 = ckj("show")
    assert info2["parents"] == [cid]
    assert 0 < info2["new_bytes"] < info2["stored_bytes"]


def test_show_human(initialized: Path) -> None:
    make_checkpoint_dir(initialized / "ckpt")
    cid = ckj("commit", "ckpt", "-m", "human", "--meta", "params.lr=0.01", "--step", 7)["id"]
    out = ck("show", cid[:8]).stdout
    assert f"commit {cid}" in out and "human" in out and "Step:   7" in out
    assert "params: {'lr': 0.01}" in out
    for needle in ("model.safetensors", "config.json", "embed.weight", "F32", "16×8", "I64", "F16", "logical",
                   "stored", "new in this commit"):
        assert needle in out, needle
    assert ck("show").stdout == out  # the default is HEAD


# ------------------------------------------------------------------------------------------------ value histograms


def hist_reference(a: np.ndarray) -> list[int]:
    """np.histogram per sign over the magnitude octaves of the documented edges (outer bins open-ended)."""
    from ckstore.model.stats import OCTAVES, hist_edges
    x = a.astype(np.float64).reshape(-1)
    x = x[np.isfinite(x) & (x != 0)]
    octaves = np.concatenate([[0.0], hist_edges()[OCTAVES + 1:-1], [np.inf]])
    return np.histogram(-x[x < 0], octaves)[0][::-1].tolist() + np.histogram(x[x > 0], octaves)[0].tolist()


def hist_checkpoints(root: Path) -> tuple[dict, dict]:
    """Two versions of a checkpoint: `w` changes (zeros, NaN, Inf in the second), `only_new` is added."""
    rng = np.random.default_rng(12)
    v0 = {"w": (rng.standard_normal((64, 64)) * 0.02).astype(np.float32), "keep": np.arange(5, dtype=np.int64)}
    w = v0["w"].copy()
    w[0, :4] = 0
    w[1, 0], w[1, 1], w[1, 2] = np.nan, np.inf, -np.inf
    w[2] *= 50
    v1 = {**v0, "w": w, "only_new": rng.standard_normal(100).astype(np.float16)}
    make_safetensors(root / "v0" / "model.safetensors", v0)
    make_safetensors(root / "v1" / "model.safetensors", v1)
    return v0, v1


def test_show_json_has_histograms_and_show_human_does_not_print_them(initialized: Path) -> None:
    _, v1 = hist_checkpoints(initialized)
    ck("commit", "v1", "-m", "v1")
    for t in ckj("show")["tensors"]:
        s = t["stats"]
        assert len(s["hist"]) == 64 and sum(s["hist"]) == s["count"] - s["zeros"] - s["nan"] - s["inf"]
        assert s["hist"] == hist_reference(v1[t["name"]])
    w = {t["name"]: t["stats"] for t in ckj("show")["tensors"]}["w"]
    assert (w["zeros"], w["nan"], w["inf"]) == (4, 1, 2)
    out = ck("show").stdout
    assert "hist" not in out and str(w["hist"][:8])[1:-1] not in out


def test_diff_hist_side_by_side(initialized: Path) -> None:
    v0, v1 = hist_checkpoints(initialized)
    a, b = (ckj("commit", v, "-m", v)["id"] for v in ("v0", "v1"))
    out = ck("diff", a, b, "--hist", "w").stdout
    lines = out.splitlines()
    assert lines[0] == f"w: value histograms, {a[:12]} → {b[:12]}" and "changed: " in lines[1]
    old, new = hist_reference(v0["w"]), hist_reference(v1["w"])
    from ckstore.model.stats import OCTAVES
    for i in (j for j in range(64) if old[j] or new[j]):  # every occupied bin, with both counts
        sign, k = ("+", i - OCTAVES) if i >= OCTAVES else ("-", OCTAVES - 1 - i)
        label = sign + ("(0" if k == 0 else f"[2^{k - 24}") + ", " + ("∞)" if k == OCTAVES - 1 else f"2^{k - 23})")
        row = next(line for line in lines if line.startswith(label + " "))
        assert row.split()[-1] == f"{new[i]:,}" and f"{old[i]:,}" in row.split()[1:-1], row
    assert "█" in out
    assert [line.split() for line in lines[-4:]] == [["zeros", "0", "4"], ["NaN", "0", "1"], ["Inf", "0", "2"],
                                                     ["elements", "4,096", "4,096"]]
    one = ck("diff", a, b, "--hist", "only_new").stdout  # in one commit only: one side
    assert f"not in old {a[:12]}" in one and "added" in one and a[:12] not in one.splitlines()[3]
    assert one.splitlines()[-1].split() == ["elements", "100"]
    assert "unchanged" in ck("diff", b, "--hist", "keep").stdout  # B alone: against its parent


def test_diff_hist_says_when_the_bins_are_a_sample(initialized: Path) -> None:
    """A tensor of large chunks: its bins are a systematic sample, which diff --hist states; the counts stay exact."""
    from ckstore.model import stats
    n = 4 * stats.HIST_SAMPLE  # one chunk: every hist_step-th element binned
    w = (np.random.default_rng(14).standard_normal(n) * 0.02).astype(np.float32)
    w[:4] = 0
    make_safetensors(initialized / "big" / "model.safetensors", {"w": w})
    ck("commit", "big", "-m", "big")
    k = stats.hist_step(n)
    out = ck("diff", "HEAD", "--hist", "w").stdout
    assert f"new {ckj('log')[0]['id'][:12]}: bins over a 1-in-{k} sample of {n:,} elements ({n // k:,} sampled)" in out
    assert out.splitlines()[-4].split() == ["zeros", "4"] and out.splitlines()[-1].split() == ["elements", f"{n:,}"]
    got = ckj("diff", "HEAD", "--hist", "w")["new"]
    assert got["hist_of"] == n // k and got["hist"] == hist_reference(w[::k]) and got["zeros"] == 4


def test_diff_hist_of_a_missing_tensor_names_it(initialized: Path, ck_main) -> None:
    hist_checkpoints(initialized)
    a, b = (ckj("commit", v, "-m", v)["id"] for v in ("v0", "v1"))
    assert_error(ck_main("diff", a, b, "--hist", "no.such.tensor"), 2, "'no.such.tensor'", a[:12], b[:12],
                 hint="ckstore show")


def test_diff_hist_computes_what_old_statistics_lack(initialized: Path) -> None:
    """A commit written before histograms (its stats have none): the histogram is computed from its data."""
    import dataclasses
    from ckstore import Repo
    from ckstore.model.objects import Manifest
    _, v1 = hist_checkpoints(initialized)
    ck("commit", "v1", "-m", "v1")
    with Repo.open(initialized) as repo:
        m = repo.manifest()
        old = tuple(dataclasses.replace(t, stats={k: v for k, v in t.stats.items() if k != "hist"})
                    for t in m.tensors)
        repo.commit(Manifest(m.files, old, m.tree), "as an older build wrote it", capture_env=False)
    assert "hist" not in {t["name"]: t["stats"] for t in ckj("show")["tensors"]}["w"]
    out = ck("diff", "HEAD~1", "HEAD", "--hist", "w").stdout
    assert "new " in out and "computed from the data" in out
    got = ckj("diff", "HEAD~1", "HEAD", "--hist", "w")
    assert got["new"]["computed"] and not got["old"]["computed"]
    assert got["new"]["hist"] == got["old"]["hist"] == hist_reference(v1["w"])
    assert (got["new"]["zeros"], got["new"]["nan"], got["new"]["inf"]) == (4, 1, 2)


def test_diff_json_has_both_histograms(initialized: Path) -> None:
    v0, v1 = hist_checkpoints(initialized)
    a, b = (ckj("commit", v, "-m", v)["id"] for v in ("v0", "v1"))
    d = ckj("diff", a, b)
    changed = {c["name"]: c for c in d["tensors"]["changed"]}
    assert list(changed) == ["w"] and d["tensors"]["added"] == ["only_new"]
    assert changed["w"]["hist"] == {"old": hist_reference(v0["w"]), "new": hist_reference(v1["w"])}
    assert changed["w"]["hist_of"] == {"old": 4096, "new": 4096}  # small: every element binned
    h = ckj("diff", a, b, "--hist", "only_new")
    assert h["tensor"] == "only_new" and h["old"] is None and len(h["edges"]) == 65
    assert h["new"]["commit"] == b and h["new"]["hist"] == hist_reference(v1["only_new"])
    assert h["new"]["hist_of"] == h["new"]["count"] == 100


# ----------------------------------------------------------------------------------------------------------- checkout


def test_checkout_is_byte_identical(initialized: Path) -> None:
    src = make_checkpoint_dir(initialized / "ckpt")
    ck("commit", src, "-m", "v1")
    expected = file_tree(src)
    make_checkpoint_dir(src, seed=1)  # the working copy moves on; the commit must not
    ck("commit", src, "-m", "v2")
    r = ck("checkout", "HEAD~1", "-o", "restored/nested")
    assert "checked out 4 files" in r.stdout
    assert file_tree(initialized / "restored" / "nested") == expected
    out = ckj("checkout", "HEAD", "-o", "v2")
    assert out["files"] == sorted(expected) and out["rev"] == "HEAD"
    assert file_tree(initialized / "v2") == file_tree(src)


def test_checkout_into_non_empty_directory(initialized: Path, ck_main) -> None:
    make_checkpoint_dir(initialized / "ckpt")
    ck("commit", "ckpt", "-m", "v1")
    dest = initialized / "dest"
    dest.mkdir()
    (dest / "model.safetensors").write_bytes(b"mine")
    (dest / "keep.txt").write_text("keep")
    r = ck_main("checkout", "HEAD", "-o", dest)
    assert_error(r, 1, "not empty", hint="--force")
    assert file_tree(dest) == {"model.safetensors": b"mine", "keep.txt": b"keep"}
    ck("checkout", "HEAD", "-o", dest, "--force")
    got = file_tree(dest)
    assert got.pop("keep.txt") == b"keep"
    assert got == file_tree(initialized / "ckpt")
    assert not any(".ckstore-tmp" in p for p in got)
    (initialized / "a-file").write_text("x")
    assert_error(ck_main("checkout", "HEAD", "-o", "a-file"), 1, "not a directory", hint=None)


def test_checkout_include_filters(initialized: Path) -> None:
    src = make_checkpoint_dir(initialized / "ckpt")
    ck("commit", src, "-m", "v1")
    ck("checkout", "HEAD", "-o", "only-model", "--include", "model*")
    assert file_tree(initialized / "only-model") == {"model.safetensors": (src / "model.safetensors").read_bytes()}
    ck("checkout", "HEAD", "-o", "two", "--include", "*.json", "--include", "sub/*.bin")
    assert sorted(file_tree(initialized / "two")) == ["config.json", "sub/notes.bin"]
    ck("checkout", "HEAD", "-o", "st", "--include", "*.safetensors")  # * matches across "/"
    assert sorted(file_tree(initialized / "st")) == ["model.safetensors", "sub/extra.safetensors"]


# ---------------------------------------------------------------------------------------------------------- revisions


@pytest.fixture
def chain(initialized: Path) -> list[str]:
    """c0 <- c1 <- c2 <- c3 on main; lightweight tag v1 at c3, annotated tag ann at c2."""
    ids = commit_series(4)
    ck("tag", "v1")
    ck("tag", "ann", "HEAD~1", "-m", "annotated")
    return ids


REVS = [("main", 3), ("HEAD", 3), ("HEAD~0", 3), ("HEAD~1", 2), ("HEAD~3", 0), ("main^", 2), ("main^^", 1),
        ("main~1^", 1), ("HEAD^1", 2), ("v1", 3), ("v1~2", 1), ("ann", 2), ("ann~1", 1), ("refs/heads/main", 3),
        ("refs/tags/ann", 2), (" main ", 3)]


def test_revision_syntax(chain: list[str]) -> None:
    for rev, index in REVS:
        assert ckj("log", rev, "-n", 1)[0]["id"] == chain[index], rev
    assert ckj("show", "v1~2")["id"] == chain[1]
    assert [e["id"] for e in ckj("log", "ann")] == chain[2::-1]


def test_revision_ids_and_prefixes(chain: list[str]) -> None:
    others = _all_object_ids(Path.cwd())
    for cid in chain:
        short = cid[:4] if sum(o.startswith(cid[:4]) for o in others) == 1 else cid[:6]  # 4 digits if unique
        for rev in (cid, cid[:12], short, cid[:7].upper()):
            assert ckj("log", rev, "-n", 1)[0]["id"] == cid, rev
        assert ckj("show", cid[:5])["id"] == cid


def test_revision_as_shown_in_log_decorations(chain: list[str]) -> None:
    assert "tags/v1" in ckj("log", "-n", 1)[0]["refs"]
    assert ckj("log", "tags/v1", "-n", 1)[0]["id"] == chain[3]


BAD_REVS = [
    ("nope", "unknown revision 'nope'"),
    ("HEAD~10", "history is shorter than that"),
    ("v1~4", "history is shorter than that"),
    ("main^2", "no parent number 2"),
    ("abc", "unknown revision 'abc'"),  # fewer than 4 hex digits never names an id
    ("~1", "no base name"),
]


def test_unknown_revision(chain: list[str], ck_main) -> None:
    for rev, message in BAD_REVS:
        for cmd in (["show", rev], ["log", rev], ["checkout", rev, "-o", "out"], ["ls", rev], ["cat", rev, "x"],
                    ["branch", "b", rev], ["tag", "t", rev]):
            assert_error(ck_main(*cmd), 1, message, hint="")
    assert not Path("out").exists()
    assert {b["name"] for b in ckj("branch")} == {"main"}
    assert {t["name"] for t in ckj("tag")} == {"v1", "ann"}


def test_unknown_hex_prefix(chain: list[str], ck_main) -> None:
    prefix = next(p for p in (f"{i:04x}" for i in range(65536))
                  if not any(o.startswith(p) for o in _all_object_ids(Path.cwd())))
    assert_error(ck_main("show", prefix), 1, f"unknown revision '{prefix}'", hint="ckstore log")


def test_no_commits_yet(initialized: Path, ck_main) -> None:
    assert_error(ck_main("show"), 1, "has no commits yet", hint="commit something first")
    assert_error(ck_main("checkout", "HEAD", "-o", "out"), 1, "has no commits yet")


def _all_object_ids(root: Path) -> list[str]:
    return [p.parent.name + p.name for p in (root / ".ckstore" / "objects").glob("*/*")]


def test_ambiguous_prefix(initialized: Path, ck_main) -> None:
    """Two objects sharing their first 4 hex digits: found by hashing candidate tag objects (cheap) and writing
    just the colliding pair, as `ckstore tag -m` would."""
    import ckstore
    from ckstore.model.objects import Tag, encode_object, object_id

    (cid,) = commit_series(1)
    seen: dict[str, tuple[str, Tag]] = {}
    pair = None
    for i in range(200_000):
        t = Tag(bytes.fromhex(cid), f"t{i}", AUTHOR, 1.0e9 + i, "crafted")
        oid = object_id(encode_object(t)).hex()
        if oid[:4] in seen:
            pair = [seen[oid[:4]], (oid, t)]
            break
        seen[oid[:4]] = (oid, t)
    assert pair is not None
    with ckstore.Repo.open(initialized) as repo:
        for oid, t in pair:
            assert repo.engine.store.put_object(t).hex() == oid
    a, b = pair[0][0], pair[1][0]
    r = ck_main("show", a[:4])
    assert_error(r, 1, f"revision '{a[:4]}' is ambiguous", a[:12], b[:12], hint="more hex digits")
    unique = len(os.path.commonprefix([a, b])) + 1
    assert ckj("log", a[:unique], "-n", 1)[0]["id"] == cid  # tags peel to their commit
    assert ckj("show", b)["id"] == cid


# ------------------------------------------------------------------------------------------------ branch, switch, tag


def test_branch_list_create_delete(initialized: Path, ck_main) -> None:
    c0, c1 = commit_series(2)
    assert ck("branch").stdout.split() == ["*", "main", c1[:12]]
    assert ck("branch", "exp", "HEAD~1").stdout.strip() == f"branch exp at {c0[:12]}"
    ck("branch", "feature/deep/name")
    lines = ck("branch").stdout.splitlines()
    assert [line.split() for line in lines] == [["exp", c0[:12]], ["feature/deep/name", c1[:12]],
                                                ["*", "main", c1[:12]]]
    assert lines[0].startswith("  exp") and lines[2].startswith("* main")
    assert ckj("branch") == [{"name": "exp", "id": c0, "current": False},
                             {"name": "feature/deep/name", "id": c1, "current": False},
                             {"name": "main", "id": c1, "current": True}]
    ck("branch", "exp", "main", "--force")
    assert ckj("log", "exp", "-n", 1)[0]["id"] == c1
    assert_error(ck_main("branch", "-d", "main"), 1, "cannot delete the current branch 'main'",
                 hint="switch to another branch first")
    assert "main" in {b["name"] for b in ckj("branch")}
    assert ck("branch", "-d", "exp").stdout.strip() == f"deleted branch exp (was {c1[:12]})"  # main keeps c1
    assert {b["name"] for b in ckj("branch")} == {"main", "feature/deep/name"}
    assert_error(ck_main("branch", "-d", "exp"), 1, "no branch named 'exp'")
    for bad in ("bad..name", "a b", "x.lock", "HEAD~1", "has:colon", ".hidden", "a//b"):
        r = ck_main("branch", "--", bad)
        assert r.code == 2 and "Traceback" not in r.err and r.err.startswith("error: invalid ref name"), (bad, r)


def test_creating_an_existing_branch_fails_without_moving_it(initialized: Path, ck_main) -> None:
    c0, c1 = commit_series(2)
    ck("branch", "exp", "HEAD~1")
    r = ck_main("branch", "exp", "HEAD")
    assert r.code == 1 and r.err.startswith("error: ") and "exp" in r.err and "Traceback" not in r.err
    assert ckj("log", "exp", "-n", 1)[0]["id"] == c0


def test_creating_an_existing_branch_says_it_exists(initialized: Path, ck_main) -> None:
    commit_series(2)
    ck("branch", "exp", "HEAD~1")
    assert_error(ck_main("branch", "exp", "HEAD"), 1, "branch 'exp' already exists", hint="--force")


def test_switch(initialized: Path, ck_main) -> None:
    c0, c1 = commit_series(2)
    ck("branch", "exp", "HEAD~1")
    assert ck("switch", "exp").stdout.strip() == "switched to exp"
    assert (initialized / ".ckstore" / "HEAD").read_text() == "ref: refs/heads/exp\n"
    assert [b["name"] for b in ckj("branch") if b["current"]] == ["exp"]
    assert ck("branch").stdout.splitlines()[0].startswith("* exp")
    f = make_safetensors("x/model.safetensors", {"w": np.zeros(3, np.float32)})
    r = ck("commit", f, "-m", "on exp")
    assert r.stdout.startswith("[exp ")
    head = ckj("log", "-n", 1)[0]
    assert head["message"] == "on exp" and head["parents"] == [c0]
    assert ckj("log", "main", "-n", 1)[0]["id"] == c1
    assert_error(ck_main("switch", "nope"), 1, "no branch named 'nope'", hint="ckstore branch nope")
    assert (initialized / ".ckstore" / "HEAD").read_text() == "ref: refs/heads/exp\n"
    ck("switch", "main")
    assert ckj("log", "-n", 1)[0]["id"] == c1


def test_switch_in_an_empty_repository_picks_the_first_branch(initialized: Path) -> None:
    ck("switch", "dev")
    f = make_safetensors("model.safetensors", model_tensors())
    assert ck("commit", f, "-m", "first").stdout.startswith("[dev ")
    assert [b["name"] for b in ckj("branch")] == ["dev"]


def test_tags(initialized: Path, ck_main) -> None:
    c0, c1, c2 = commit_series(3)
    assert ck("tag", "v1").stdout.strip() == f"tag v1 at {c2[:12]}"
    ck("tag", "baseline", "HEAD~2", "-m", "the baseline")
    assert ckj("tag") == [{"name": "baseline", "id": c0, "message": "the baseline"},
                          {"name": "v1", "id": c2, "message": ""}]
    listing = ck("tag").stdout
    assert "baseline" in listing and c0[:12] in listing and "the baseline" in listing
    # tags never move
    for args in (["tag", "v1", "HEAD~1"], ["tag", "v1"], ["tag", "baseline", "HEAD", "-m", "moved"]):
        assert_error(ck_main(*args), 1, "already exists", hint="tags never move")
    assert ckj("log", "v1", "-n", 1)[0]["id"] == c2
    assert ckj("log", "baseline", "-n", 1)[0]["id"] == c0
    assert ck("tag", "-d", "v1").stdout.strip().startswith("deleted tag v1 (was ")
    assert_error(ck_main("log", "v1"), 1, "unknown revision 'v1'")
    ck("tag", "v1", "HEAD~1")  # a deleted name can be used again
    assert ckj("log", "v1", "-n", 1)[0]["id"] == c1
    assert_error(ck_main("tag", "-d", "nope"), 1, "no tag named 'nope'")
    assert_error(ck_main("tag", "bad..tag"), 2, "invalid ref name")
    decorated = ck("log", "--oneline").stdout
    assert "tags/baseline" in decorated and "tags/v1" in decorated


# ------------------------------------------------------------------------------------------------------------ ls, cat


def test_ls_and_cat(initialized: Path, ck_main) -> None:
    src = make_checkpoint_dir(initialized / "ckpt")
    ck("commit", src, "-m", "v1")
    tree = file_tree(src)
    listed = ckj("ls", "HEAD")
    assert [(f["path"], f["size"]) for f in listed] == [(p, len(b)) for p, b in sorted(tree.items())]
    assert all(f["hash"] == blake3.blake3(tree[f["path"]]).hexdigest() for f in listed)
    lines = ck("ls").stdout.splitlines()
    assert [line.split() for line in lines] == [[str(len(b)), p] for p, b in sorted(tree.items())]
    for path, data in tree.items():
        assert ck("cat", "HEAD", path).stdout_bytes == data, path
    make_checkpoint_dir(src, seed=3)
    ck("commit", src, "-m", "v2")
    assert ck("cat", "HEAD~1", "sub/notes.bin").stdout_bytes == tree["sub/notes.bin"]
    assert ck("cat", "HEAD", "sub/notes.bin").stdout_bytes == (src / "sub" / "notes.bin").read_bytes()
    r = ck_main("cat", "HEAD", "nope.bin")
    assert r.code != 0 and "'nope.bin' is not in HEAD" in r.err and "ckstore ls HEAD" in r.err
    assert r.out == ""


@needs_script
def test_cat_real_process_writes_exact_bytes(initialized: Path) -> None:
    f = make_safetensors("model.safetensors", model_tensors(5))
    ck("commit", f, "-m", "v1")
    r = subprocess.run([CKSTORE, "cat", "HEAD", "model.safetensors"], cwd=initialized, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f.read_bytes()


# --------------------------------------------------------------------------------------------------------------- fsck


def test_fsck_clean(initialized: Path) -> None:
    commit_series(3)
    ck("tag", "v1", "-m", "annotated")
    r = ck("fsck")
    assert r.stdout.strip().endswith(": ok") and "3 commits" in r.stdout and r.stderr == ""
    assert ck("fsck", "--read-data").stdout.strip().endswith(": ok")
    report = ckj("fsck", "--read-data")
    assert report["ok"] is True and report["problems"] == []
    assert report["commits"] == 3 and report["refs"] == 2 and report["chunks"] >= 3 and report["packs"] >= 1
    assert ckj("fsck", "--reindex")["ok"] is True


def _corrupt_one_pack(root: Path) -> tuple[Path, str]:
    rng = np.random.default_rng(7)
    f = make_safetensors(root / "big" / "model.safetensors",
                         {"a": rng.standard_normal(3000).astype(np.float32),
                          "b": rng.standard_normal(5000).astype(np.float32),
                          "c": rng.standard_normal(2000).astype(np.float32)})
    cid = ckj("commit", f, "-m", "big")["id"]
    packs = list((root / ".ckstore" / "packs").rglob("*.pack"))
    assert len(packs) == 1
    pack = packs[0]
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    return pack, cid


def _chunk_health(root: Path) -> tuple[set[str], set[str]]:
    """(intact, damaged) chunk ids of the repository, by reading each one back through the store."""
    import ckstore
    from ckstore.errors import CkstoreError
    from ckstore.storage.packs import parse_idx

    intact, damaged = set(), set()
    with ckstore.Repo.open(root) as repo:
        for idx in (root / ".ckstore" / "packs").rglob("*.idx"):
            for e in parse_idx(idx.read_bytes())[1]:
                try:
                    repo.engine.store.get_chunk(e.chunk)
                    intact.add(e.chunk.hex())
                except CkstoreError:
                    damaged.add(e.chunk.hex())
    return intact, damaged


@needs_script
def test_fsck_names_a_damaged_pack_real_process(initialized: Path) -> None:
    pack, _ = _corrupt_one_pack(initialized)
    r = run_script("fsck", cwd=initialized)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"error: pack {pack.stem}" in r.stderr
    assert "problems" in r.stdout


def test_fsck_read_data_json_after_damage(initialized: Path, ck_main) -> None:
    pack, _ = _corrupt_one_pack(initialized)
    r = ck_main("fsck", "--read-data", "--json")
    assert r.code == 1
    report = json.loads(r.out)
    assert report["ok"] is False
    named = {p["id"] for p in report["problems"]}
    _, damaged = _chunk_health(initialized)
    assert len(damaged) == 1
    assert pack.stem in named or damaged <= named


def test_fsck_read_data_pinpoints_the_damaged_chunk(initialized: Path, ck_main) -> None:
    _corrupt_one_pack(initialized)
    intact, damaged = _chunk_health(initialized)
    assert len(damaged) == 1 and intact
    report = json.loads(ck_main("fsck", "--read-data", "--json").out)
    chunk_problems = {p["id"] for p in report["problems"] if p["kind"] == "chunk"}
    assert damaged <= chunk_problems
    assert not intact & chunk_problems


def test_reading_damaged_data_fails_cleanly(initialized: Path, ck_main) -> None:
    _corrupt_one_pack(initialized)
    r = ck_main("checkout", "HEAD", "-o", "restored")
    assert_error(r, 1, "corrupt chunk", hint="ckstore fsck --read-data")
    restored = initialized / "restored"
    assert not restored.exists() or list(restored.rglob("*")) == []  # no partial file, no temp file
    from ckstore.errors import CorruptObject
    r = ck("cat", "HEAD", "model.safetensors", ok=False)  # streams verified bytes, stops at the damaged chunk
    assert r.exit_code == 1 and isinstance(r.exception, CorruptObject)


def test_fsck_detects_an_edited_audit_log(initialized: Path, ck_main) -> None:
    commit_series(2)
    log = initialized / ".ckstore" / "logs" / "audit"
    log.write_text(log.read_text().replace('"message":"c0"', '"message":"edited"'))
    r = ck_main("fsck")
    assert r.code == 1 and "error: audit" in r.err and "altered" in r.err


# -------------------------------------------------------------------------------------------------------------- audit


def test_audit_records_every_ref_change(initialized: Path) -> None:
    c0, c1 = commit_series(2)
    ck("branch", "exp", "HEAD~1")
    ck("tag", "ann", "HEAD", "-m", "release")
    ck("tag", "-d", "ann")
    ck("branch", "-d", "exp")
    f = make_safetensors("t/model.safetensors", {"w": np.ones(2, np.float32)})
    c2 = ckj("commit", f, "-m", "tagged", "--tag", "rel")["id"]
    entries = ckj("audit")
    summary = [(e["action"], e["ref"], e["old"], e["new"], e["message"]) for e in entries]
    ann_target = summary[3][3]
    assert summary == [
        ("commit", "refs/heads/main", None, c0, "c0"),
        ("commit", "refs/heads/main", c0, c1, "c1"),
        ("branch", "refs/heads/exp", None, c0, "from HEAD~1"),
        ("tag", "refs/tags/ann", None, ann_target, "release"),
        ("tag-delete", "refs/tags/ann", ann_target, None, ""),
        ("branch-delete", "refs/heads/exp", c0, None, ""),
        ("commit", "refs/heads/main", c1, c2, "tagged"),
        ("tag", "refs/tags/rel", None, c2, "tagged"),
    ]
    assert ann_target != c1  # an annotated tag ref points at its tag object
    for i, e in enumerate(entries):
        assert e["user"] == AUTHOR and e["seq"] == i + 1 and isinstance(e["time"], float)
        assert e["prev"] == (entries[i - 1]["hash"] if i else "0" * 64)
    table = ck("audit").stdout
    for word in ("commit", "branch-delete", "tag-delete", "release", AUTHOR, c0[:12], "refs/heads/main",
                 "refs/tags/ann"):
        assert word in table, word  # piped output is not squeezed to 80 columns
    assert "…" not in table


# --------------------------------------------------------------------------------------------------------------- demo


@needs_script
def test_demo(tmp_path: Path) -> None:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    r = run_script("demo", cwd=tmp_path, env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "byte-identical: True" in r.stdout
    assert "fsck --read-data: clean" in r.stdout
    assert list(tmp.iterdir()) == []  # the temporary repository is gone
    assert not (tmp_path / ".ckstore").exists()


# ---------------------------------------------------------------------------------------------- usage errors and help


def test_usage_errors_exit_2(initialized: Path, ck_main) -> None:
    f = make_safetensors("model.safetensors", model_tensors())
    usage_error(ck_main("log", "--bogus"), "No such option: --bogus")
    usage_error(ck_main("--bogus"), "No such option")
    usage_error(ck_main("commit", f), "Missing option '-m'")
    usage_error(ck_main("commit", "-m", "no source"), "Missing argument")
    usage_error(ck_main("log", "-n", "many"), "Invalid value for '-n'")
    usage_error(ck_main("checkout", "HEAD"), "Missing option '-o'")
    usage_error(ck_main("frobnicate"), "No such command 'frobnicate'")
    usage_error(ck_main("cat", "HEAD"), "Missing argument")
    assert ckj("log") == []  # nothing was committed by any of them
    r = ck("commit", f, ok=False)
    assert r.exit_code == 2


@needs_script
def test_usage_errors_real_process(initialized: Path) -> None:
    make_safetensors("model.safetensors", model_tensors())
    r = run_script("commit", "model.safetensors", cwd=initialized)
    assert r.returncode == 2 and "Missing option '-m'" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
    r = run_script("log", "--unknown-flag", cwd=initialized)
    assert r.returncode == 2 and "No such option: --unknown-flag" in r.stderr and "Traceback" not in r.stderr


def test_no_arguments_prints_help(ck_main) -> None:
    r = ck_main()
    assert "Usage: " in r.out + r.err and "Traceback" not in r.err
    assert "Version model checkpoints the way you version code." in r.out + r.err
    assert r.code == 2  # no command is a usage error, as with any missing argument


COMMANDS = sorted(typer.main.get_command(app).commands)
CORE = {"init", "commit", "log", "show", "checkout", "branch", "switch", "tag", "ls", "cat", "fsck", "audit", "demo"}


def test_command_set() -> None:
    assert set(COMMANDS) >= CORE


def test_root_help(ck_main) -> None:
    for flag in ("--help", "-h"):
        r = ck_main(flag)
        assert r.code == 0 and r.err == ""
        assert "Version model checkpoints the way you version code." in r.out
        assert "-C DIR" in r.out
        for name in COMMANDS:
            assert f"  {name} " in r.out, name


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name: str) -> None:
    command = typer.main.get_command(app).commands[name]
    r = ck(name, "--help")
    assert r.stdout.startswith(f"Usage: ckstore {name} ") or r.stdout.startswith(f"Usage: ckstore {name}\n")
    assert _words(command.help.splitlines()[0]) in _words(r.stdout)
    assert ck(name, "-h").stdout == r.stdout


def test_every_command_has_help_text() -> None:
    for name, command in typer.main.get_command(app).commands.items():
        assert command.help and command.help.strip(), f"{name} has no description"


@pytest.mark.parametrize("name", sorted(CORE))
def test_every_parameter_has_help_text(name: str) -> None:
    command = typer.main.get_command(app).commands[name]
    for param in command.params:
        if param.name != "help":
            assert getattr(param, "help", None), f"{name}: parameter {param.name!r} has no help text"
