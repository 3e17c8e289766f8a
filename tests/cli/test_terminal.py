"""The terminal conventions of a git-like tool, through the command line: `log --format`, `--json` on every command
that prints, errors and warnings as JSON, `--json-lines`, `-q`, progress off a terminal, binary units, sparklines.

Helpers come from test_cli (CliRunner in-process, `ckstore.cli.main` for error paths); the only things faked are
the progress clock and the environment."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import typer

import ckstore.cli.progress as cli_progress
from ckstore.cli import app
from ckstore.cli.progress import DelayedProgress
import test_cli
from conftest import make_safetensors
from test_cli import ck, ckj, commit_series

# test_cli's fixtures, used here by name: a fresh directory and environment for each test (autouse), a repository,
# and the console-script entry point in-process
_user_env, initialized, ck_main = test_cli._user_env, test_cli.initialized, test_cli.ck_main

DECIMAL_UNITS = re.compile(r"\d\s?(kB|KB|MB|GB|TB)(/s)?\b")


def commit_file(name: str, value: float, *args: object) -> str:
    f = make_safetensors(Path(name) / "model.safetensors", {"w": np.full(8, value, np.float32)})
    return ckj("commit", f, "-m", name, *args)["id"]


def big_checkpoint(root: Path) -> Path:
    """About 2.4 MiB in 16 tensors: enough progress steps for the 10-second lines on a fast clock."""
    rng = np.random.default_rng(3)
    return make_safetensors(root / "big" / "model.safetensors",
                            {f"t{i:02d}": rng.standard_normal(40_000).astype(np.float32) for i in range(16)})


def json_lines(text: str) -> list[dict]:
    """Each line of `text` as one JSON object (NDJSON): no blank lines, no object spread over lines."""
    lines = text.splitlines()
    assert all(line.startswith("{") and line.endswith("}") for line in lines), text
    return [json.loads(line) for line in lines]


@pytest.fixture
def no_terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich treats these as "a terminal" even on a pipe; the CI environment must not decide what a test sees."""
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


def fake_clock(monkeypatch: pytest.MonkeyPatch, step: float) -> None:
    """The progress clock moves `step` seconds each time it is read (only the progress uses it)."""
    ticks = itertools.count(0.0, step)
    monkeypatch.setattr(cli_progress, "clock", lambda: next(ticks))


# ------------------------------------------------------------------------------------------------------ log --format


def test_log_format_placeholders(initialized: Path) -> None:
    f = make_safetensors("a/model.safetensors", {"w": np.zeros(8, np.float32)})
    first = ckj("commit", f, "-m", "first", "--step", 7, "--metric", "loss=0.25", "--meta", "params.opt.lr=0.001")
    f = make_safetensors("b/model.safetensors", {"w": np.ones(8, np.float32)})
    second = ckj("commit", f, "-m", "second\n\nwhy it changed")
    ck("tag", "v1", "HEAD~1")
    ck("note", "add", "HEAD~1", "--ns", "eval", "acc=0.5")
    out = ck("log", "--format", "%H|%h|%s|%b|%an|%ae|%at|%d|%D|%p|%P|%(step)|%(metric:loss)|%(param:opt.lr)|"
                                "%(note:eval.acc)|%%|x%ny").stdout
    a, b = first["id"], second["id"]
    assert out.splitlines() == [
        f"{b}|{b[:12]}|second|why it changed|tester@ci||{int(second['time'])}| (main)|main|{a[:12]}|{a}|||||%|x",
        "y",
        f"{a}|{a[:12]}|first||tester@ci||{int(first['time'])}| (tags/v1)|tags/v1|||7|0.25|0.001|0.5|%|x",
        "y",
    ]


def test_log_format_dates_match_the_default_view(initialized: Path) -> None:
    commit_series(2)
    dates = [line.removeprefix("Date:").strip() for line in ck("log").stdout.splitlines() if line.startswith("Date:")]
    assert ck("log", "--format", "%ad").stdout.splitlines() == dates
    for line in ck("log", "--format", "%ar").stdout.splitlines():
        assert re.fullmatch(r"\d+ seconds? ago", line), line


def test_log_format_names(initialized: Path) -> None:
    ids = commit_series(3)
    assert ck("log", "--format", "oneline").stdout.splitlines() == [f"{i} c{n}" for n, i in reversed(list(
        enumerate(ids)))]
    assert ck("log", "--pretty", "oneline").stdout == ck("log", "--format", "oneline").stdout
    short = ck("log", "--format", "short", "-n", 1).stdout
    assert short == f"commit {ids[2]} (main)\nAuthor: tester@ci\n\n    c2\n\n"
    assert ck("log", "--format", "full").stdout == ck("log").stdout
    assert json.loads(ck("log", "--format", "json").stdout) == ckj("log")


def test_log_format_with_graph_lanes(initialized: Path) -> None:
    commit_series(2)
    ck("branch", "exp", "HEAD~1")
    commit_file("on-exp", 9, "--branch", "exp")
    commit_file("on-main", 8)
    lines = ck("log", "--all", "--graph", "--format", "%s%n%(step)").stdout.splitlines()
    assert lines[:4] == ["* on-main", "| ", "| * on-exp", "| | "]  # no step: the lanes alone
    assert lines[-2:] == ["* c0", "| 0"]  # continued as the default view continues a lane


def test_unknown_placeholder_is_an_error_naming_it(initialized: Path, ck_main) -> None:
    for args in (["--format", "%h %x"], ["--format", "%(metric)"]):
        r = ck_main("log", *args)
        assert r.code == 2 and r.out == ""
        first, hint = r.err.splitlines()
        assert first == f"error: unknown --format placeholder {args[1].split()[-1]}" and hint.startswith("hint: known:")
    commit_series(1)
    r = ck_main("log", "--format", "%Q", "--json")
    assert r.code == 2 and r.out == ""
    assert json_lines(r.err) == [{"error": "unknown --format placeholder %Q", "code": 2,
                                  "hint": "known: %H %h %s %b %an %ae %ad %ar %at %d %D %p %P %n %% %(step) "
                                          "%(metric:NAME) %(param:NAME) %(note:NS.KEY)"}]


# --------------------------------------------------------------------------------------------------------- sparklines


def test_log_metric_values_and_sparkline(initialized: Path) -> None:
    ids = [commit_file(f"c{i}", i, "--metric", f"loss={v}") for i, v in enumerate([0.9, 0.5, 0.6])]
    ids.append(commit_file("c3", 3))
    lines = ck("log", "--metric", "loss").stdout.splitlines()
    assert lines == [f"{ids[3][:12]} (main)  loss=-  c3", f"{ids[2][:12]}  loss=0.6  c2",
                     f"{ids[1][:12]}  loss=0.5  c1", f"{ids[0][:12]}  loss=0.9  c0",
                     "loss  █▁▃   min 0.5  max 0.9  last 0.6  (3 of 4 commits, oldest → newest)"]
    two = ck("log", "--metric", "loss", "-n", 2).stdout.splitlines()
    assert two[-1] == "loss  ▄   min 0.6  max 0.6  last 0.6  (1 of 2 commits, oldest → newest)"
    assert [e["id"] for e in json.loads(ck("log", "--metric", "loss", "--json").stdout)] == ids[::-1]


def test_log_metric_reads_dotted_paths_and_templates(initialized: Path) -> None:
    for i, lr in enumerate([0.1, 0.3]):
        commit_file(f"c{i}", i, "--meta", f"params.lr={lr}")
    out = ck("log", "--metric", "params.lr", "--format", "%s %(param:lr)").stdout.splitlines()
    assert out == ["c1 0.3", "c0 0.1", "params.lr  ▁█  min 0.1  max 0.3  last 0.3  (2 of 2 commits, oldest → newest)"]


def test_log_metric_nobody_has_is_a_warning(initialized: Path) -> None:
    commit_series(2)
    r = ck("log", "--metric", "nope")
    assert r.stderr == "warning: no commit listed has a number for nope\n"
    assert [line.split()[1] for line in r.stdout.splitlines()] == ["(main)", "nope=-"]


def test_lineage_metric_sparkline(initialized: Path) -> None:
    ids = [commit_file(f"c{i}", i, "--metric", f"loss={v}", "--step", i * 10) for i, v in enumerate([3, 1, 2])]
    lines = ck("lineage", "--metric", "loss").stdout.splitlines()
    assert lines == [f"{ids[2][:12]}  step      20  loss=2  c2", f"{ids[1][:12]}  step      10  loss=1  c1",
                     f"{ids[0][:12]}  step       0  loss=3  c0",
                     "loss  █▁▅  min 1  max 3  last 2  (3 of 3 commits, oldest → newest)"]
    assert "▁" not in ck("lineage").stdout


# ----------------------------------------------------------------------------------------------- --json everywhere


def _leaf_commands(group=None, path: str = "") -> dict:
    group = group or typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out.update(_leaf_commands(cmd, f"{path}{name} "))
        else:
            out[f"{path}{name}"] = cmd
    return out


def _flags(cmd) -> dict[str, object]:
    return {opt: p for p in cmd.params for opt in p.opts}


LISTINGS = {"log", "find", "ls", "audit", "du", "fsck", "forget", "lineage", "branch", "tag", "note list",
            "note show", "alias list", "alias history"}


def test_every_command_that_prints_takes_json() -> None:
    commands = _leaf_commands()
    assert len(commands) > 40 and "note add" in commands and "remote set-min-replicas" in commands
    lacking = sorted(name for name, cmd in commands.items()
                     if not getattr(_flags(cmd).get("--json"), "is_flag", False))
    assert lacking == ["cat", "demo"]  # raw file bytes; a walkthrough for people
    assert sorted(name for name, cmd in commands.items() if "--json-lines" in _flags(cmd)) == sorted(LISTINGS)


def test_json_from_commands_that_confirm(initialized: Path, tmp_path: Path) -> None:
    assert ckj("-C", tmp_path, "init", tmp_path / "second") == {"path": str((tmp_path / "second" / ".ckstore")
                                                                            .resolve())}
    c0, c1 = commit_series(2)
    assert ckj("branch", "exp", "HEAD~1") == {"name": "exp", "id": c0, "current": False}
    assert ckj("switch", "exp") == {"head": "exp"}
    assert ckj("switch", "main") == {"head": "main"}
    assert ckj("branch", "-D", "exp") == {"deleted": "exp", "was": c0}
    assert ckj("tag", "v1", "-m", "first release") == {"name": "v1", "id": c1, "message": "first release"}
    assert ckj("describe") == {"rev": "HEAD", "name": "v1"}
    assert ckj("tag", "-d", "v1")["deleted"] == "v1"
    assert ckj("name-template") == {"name_template": None}
    assert ckj("name-template", "{model}-v{n}") == {"name_template": "{model}-v{n}"}
    assert ckj("protect", "main", "--ff-only")["pattern"] == "refs/heads/main"
    assert ckj("protect", "main", "--remove") == {"unprotected": "main"}
    assert ckj("remote", "add", "origin", tmp_path / "remote")["name"] == "origin"
    assert ckj("remote", "add-group", "all", "origin") == {"group": "all", "members": ["origin"]}
    assert ckj("remote", "set-min-replicas", "2") == {"min_replicas": 2}
    assert ckj("remote", "remove", "all") == {"removed": "all", "group": True}
    assert ckj("signing") == {"signing_key": None, "signer": None, "allowed_signers": None,
                              "require_signatures": None}
    (tmp_path / "vals.json").write_text('{"mmlu": 0.61}')
    note = ckj("note", "add", "HEAD", "--ns", "eval", "--json-file", "vals.json", "gsm8k=0.4")
    assert note["data"] == {"mmlu": 0.61, "gsm8k": 0.4} and note["ns"] == "eval"


# ---------------------------------------------------------------------------------------------- errors and warnings


def test_errors_are_json_lines_with_the_same_exit_code(initialized: Path, ck_main) -> None:
    commit_series(1)
    human = ck_main("show", "nope")
    r = ck_main("show", "nope", "--json")
    assert r.code == human.code == 1 and r.out == ""
    (err,) = json_lines(r.err)
    assert human.err.splitlines() == [f"error: {err['error']}", f"hint: {err['hint']}"]
    assert err["code"] == 1 and "unknown revision 'nope'" in err["error"]
    assert json_lines(ck_main("ls", "nope", "--json-lines").err) == [err]


def test_usage_errors_are_json_too(initialized: Path, ck_main) -> None:
    r = ck_main("log", "--bogus", "--json")
    assert r.code == 2 and r.out == ""
    (err,) = json_lines(r.err)
    assert err["error"] == "No such option: --bogus" and err["code"] == 2
    assert re.fullmatch(r"see '.*ckstore log --help'", err["hint"]), err  # in tests the program is `python -m ...`
    r = ck_main("best", "loss", "--min", "--max", "--json")  # the library's UsageError
    assert r.code == 2 and json_lines(r.err) == [{"error": "--min and --max exclude each other", "hint": None,
                                                  "code": 2}]
    r = ck_main("log", "--bogus")
    assert r.code == 2 and "No such option: --bogus" in r.err and not r.err.startswith("{")


def test_os_and_command_errors_are_json(initialized: Path, ck_main) -> None:
    commit_series(1)
    Path("afile").write_text("not a directory")
    r = ck_main("checkout", "HEAD", "-o", "afile/out", "--json")
    assert r.code == 1 and r.out == ""
    (err,) = json_lines(r.err)
    assert err["code"] == 1 and err["error"].startswith("Not a directory") and "afile" in err["error"]
    r = ck_main("best", "nope", "--json")
    assert r.code == 1 and json_lines(r.err) == [{"error": "no commit reachable from HEAD has metric 'nope'",
                                                  "hint": None, "code": 1}]
    assert ck_main("best", "nope").err == "error: no commit reachable from HEAD has metric 'nope'\n"


def test_warnings_are_json_in_json_mode(initialized: Path) -> None:
    commit_series(1)
    r = ck("find", "metrics.nope < 1", "--json")
    assert json.loads(r.stdout) == []
    assert json_lines(r.stderr) == [{"warning": "no commit has metrics.nope"}]
    assert ck("find", "metrics.nope < 1").stderr == "warning: no commit has metrics.nope\n"
    commit_file("n1", 1, "--metric", "loss=nan")
    commit_file("n2", 2, "--metric", "loss=nan")
    expected = [{"warning": "non-finite numbers (NaN, Infinity) are printed as null"}]
    assert json_lines(ck("log", "--json").stderr) == expected
    r = ck("log", "--json-lines")
    assert json_lines(r.stderr) == expected  # once per command, not once per line
    assert [e["metrics"].get("loss", 0) for e in json_lines(r.stdout)] == [None, None, 0]


# ------------------------------------------------------------------------------------------------------ --json-lines


def test_json_lines_are_the_json_listings_one_per_line(initialized: Path) -> None:
    ids = commit_series(3, **{"--metric": "loss=0.5"})
    ck("tag", "v1", "HEAD~1")
    ck("note", "add", "HEAD", "--ns", "eval", "acc=0.5")
    ck("alias", "set", "champion", "HEAD~1", "--reason", "best so far")
    ck("alias", "set", "champion", "HEAD", "--reason", "better")
    for args in (["log"], ["find", "step >= 1"], ["ls"], ["audit"], ["lineage"], ["branch"], ["tag"],
                 ["note", "show", "HEAD"], ["alias", "list"], ["alias", "history", "champion"]):
        expected = ckj(*args)
        assert len(expected) >= 1, args
        assert json_lines(ck(*args, "--json-lines").stdout) == expected, args
    assert [e["id"] for e in json_lines(ck("log", "--json-lines").stdout)] == ids[::-1]
    assert json_lines(ck("du", "--json-lines").stdout) == ckj("du")["rows"]
    forget = ["forget", "--keep-last", "1", "--no-keep-tagged", "--dry-run"]
    decisions = json_lines(ck(*forget, "--json-lines").stdout)
    assert decisions == ckj(*forget)["commits"] and [d["kept"] for d in decisions] == [True, False, False]
    assert json_lines(ck("note", "list", "--json-lines").stdout) == [{"id": ids[2], "notes": {"eval": {"acc": 0.5}}}]


def test_log_json_lines_stream_before_a_failure(initialized: Path, ck_main) -> None:
    ids = commit_series(3)
    obj = initialized / ".ckstore" / "objects" / ids[0][:2] / ids[0][2:]
    obj.chmod(0o600)
    obj.write_bytes(b"damaged")
    for cache in (initialized / ".ckstore" / "cache").iterdir():  # commits would come from the LMDB cache
        if cache.is_dir():
            for f in cache.iterdir():
                f.unlink()
            cache.rmdir()
        else:
            cache.unlink()
    r = ck_main("log", "--json-lines")
    assert r.code == 1
    assert [e["id"] for e in json_lines(r.out)] == [ids[2], ids[1]]  # printed as the walk reached them
    (err,) = json_lines(r.err)
    assert ids[0] in err["error"] and err["code"] == 1
    r = ck_main("log", "--json")
    assert r.code == 1 and r.out == ""  # one document: nothing until the whole walk is done


def test_fsck_json_lines_are_its_problems(initialized: Path, ck_main) -> None:
    r = ck_main("fsck", "--json-lines")
    assert r.code == 0 and r.out == ""
    test_cli._corrupt_one_pack(initialized)
    r = ck_main("fsck", "--read-data", "--json-lines")
    assert r.code == 1
    problems = json_lines(r.out)
    assert problems and problems == json.loads(ck_main("fsck", "--read-data", "--json").out)["problems"]


# ------------------------------------------------------------------------------------------------------------ --quiet


def test_quiet_commit_prints_nothing_but_commits(initialized: Path) -> None:
    f = make_safetensors("m/model.safetensors", {"w": np.zeros(8, np.float32)})
    assert ck("commit", f, "-m", "loud").stdout.startswith("[main ")
    for args in (["-q", "commit", f, "-m", "global"], ["commit", "-q", f, "-m", "local"],
                 ["commit", "--quiet", f, "-m", "long"]):
        r = ck(*args)
        assert (r.stdout, r.stderr) == ("", ""), args
    assert [e["message"] for e in ckj("log")] == ["long", "local", "global", "loud"]
    assert ckj("-q", "commit", f, "-m", "data")["message"] == "data"  # asked-for data is still printed
    assert len(ck("-q", "log", "--oneline").stdout.splitlines()) == 5


def test_quiet_keeps_errors(initialized: Path, ck_main) -> None:
    commit_series(1)
    r = ck_main("-q", "show", "nope")
    assert r.code == 1 and r.err.startswith("error: unknown revision 'nope'")
    r = ck_main("-q", "best", "nope")
    assert r.code == 1 and r.err == "error: no commit reachable from HEAD has metric 'nope'\n"


def silent(*args: object) -> None:
    """`ckstore ARGS` succeeds and prints nothing at all."""
    r = ck(*args)
    assert (r.stdout, r.stderr) == ("", ""), (args, r.stdout, r.stderr)


def test_quiet_across_commands(initialized: Path, tmp_path: Path) -> None:
    commit_series(3)
    silent("init", "-q", tmp_path / "other")
    silent("-q", "checkout", "HEAD", "-o", "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    silent("branch", "-q", "exp")
    silent("switch", "-q", "exp")
    silent("-q", "switch", "main")
    silent("-q", "tag", "v1")
    silent("-q", "reset", "exp", "HEAD~1", "--reason", "back", "-f")
    ck("remote", "add", "origin", tmp_path / "remote")
    silent("push", "-q", "origin", "main")
    assert "origin" in ck("push", "origin", "main").stdout  # without -q it reports
    silent("fetch", "-q", "origin")
    assert ckj("log", "origin/main")[0]["id"] == ckj("log")[0]["id"]
    forget = ["forget", "--keep-last", "1", "--no-keep-tagged", "--group-by", "none"]
    assert "would drop 1 commits" in ck("-q", *forget, "--dry-run").stdout  # a dry run's plan is the data asked for
    silent("-q", *forget)
    assert len(ckj("log")) == 2  # c0 dropped; the tips of main and exp stay
    assert "would sweep" in ck("-q", "gc", "--dry-run").stdout
    silent("-q", "gc", "--now")


# ----------------------------------------------------------------------------------------------------------- progress


def test_progress_lines_when_stderr_is_no_terminal(initialized: Path, monkeypatch, no_terminal_env) -> None:
    fake_clock(monkeypatch, 3.0)
    r = ck("commit", big_checkpoint(initialized), "-m", "big")
    assert r.stdout.startswith("[main ") and "\r" not in r.stderr
    *lines, final = r.stderr.splitlines()
    assert lines, r.stderr
    for line in lines:
        assert re.fullmatch(r"commit: [\d.]+ (B|KiB|MiB) / 2\.4 MiB \(\d+%\), [\d.]+ (B|KiB|MiB)/s", line), line
    assert re.fullmatch(r"commit: 2\.4 MiB in \d+ s, [\d.]+ KiB/s", final), final
    assert not DECIMAL_UNITS.search(r.stderr)


def test_progress_lines_are_ten_seconds_apart_and_json_in_json_mode(initialized: Path, monkeypatch,
                                                                     no_terminal_env) -> None:
    fake_clock(monkeypatch, 3.0)
    r = ck("commit", big_checkpoint(initialized), "-m", "big", "--json")
    assert json.loads(r.stdout)["message"] == "big"
    records = json_lines(r.stderr)
    *periodic, final = records
    assert periodic and final["final"] is True and not any(p["final"] for p in periodic)
    assert all(p["progress"] == "commit" and p["unit"] == "bytes" and p["total"] == final["done"] for p in records)
    times = [p["seconds"] for p in records]
    assert times[0] >= 10 and all(b - a >= 3 for a, b in zip(times, times[1:]))
    assert all(b["seconds"] - a["seconds"] >= 10 for a, b in zip(periodic, periodic[1:]))


def test_no_progress_under_quiet_or_for_short_work(initialized: Path, monkeypatch, no_terminal_env) -> None:
    src = big_checkpoint(initialized)
    fake_clock(monkeypatch, 3.0)
    assert ck("-q", "commit", src, "-m", "quiet").stderr == ""
    monkeypatch.setattr(cli_progress, "clock", lambda: 0.0)  # all of it within a second
    assert ck("checkout", "HEAD", "-o", "out").stderr == ""


def test_fsck_progress_counts_packs(initialized: Path, monkeypatch, no_terminal_env) -> None:
    commit_series(2)
    fake_clock(monkeypatch, 11.0)
    r = ck("fsck")
    lines = r.stderr.splitlines()
    assert re.fullmatch(r"fsck: 1 / \d+ packs \(\d+%\), 0\.1 packs/s", lines[0]), lines
    assert re.fullmatch(r"fsck: \d+ packs in \d+ s, [\d.]+ packs/s", lines[-1]), lines


def test_progress_unit_lines(monkeypatch, capsys, no_terminal_env) -> None:
    """The exact lines for a known clock: every 10 seconds since the last line, and a final line."""
    times = iter([0.0, 5.0, 10.0, 15.0, 20.0, 21.0])
    monkeypatch.setattr(cli_progress, "clock", lambda: next(times))
    p = DelayedProgress()
    p.begin("push", 4 << 20)
    for _ in range(4):
        p.advance(1 << 20)
    p.end()
    assert capsys.readouterr().err.splitlines() == ["push: 2.0 MiB / 4.0 MiB (50%), 204.8 KiB/s",
                                                    "push: 4.0 MiB / 4.0 MiB (100%), 204.8 KiB/s",
                                                    "push: 4.0 MiB in 21 s, 195.0 KiB/s"]
    times = iter([0.0, 10.0, 20.0, 25.0])
    p.begin("gc: marking", 0)
    p.advance(0)
    p.advance(0)
    p.end()
    assert capsys.readouterr().err.splitlines() == ["gc: marking: 0 B, 0 B/s", "gc: marking: 0 B, 0 B/s",
                                                    "gc: marking: 0 B in 25 s, 0 B/s"]
    times = iter([0.0, 9.0, 9.5])
    p.begin("checkout", 100)
    p.advance(100)
    p.end()
    assert capsys.readouterr().err == ""  # under 10 seconds: nothing at all


def test_progress_bar_on_a_terminal_says_binary_rates(initialized: Path, monkeypatch) -> None:
    ck("commit", big_checkpoint(initialized), "-m", "big")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws its bar as on a terminal
    fake_clock(monkeypatch, 3.0)
    r = ck("checkout", "HEAD", "-o", "out")
    assert "\r" in r.stderr and "2.4 MiB" in r.stderr  # the bar, not lines
    assert re.search(r"[\d.]+ (KiB|MiB)/s", r.stderr), r.stderr
    assert not DECIMAL_UNITS.search(r.stderr), r.stderr


# -------------------------------------------------------------------------------------------------------------- units


def test_sizes_print_in_binary_units(initialized: Path) -> None:
    src = big_checkpoint(initialized)
    outputs = [ck("commit", src, "-m", "big").stdout, ck("show").stdout, ck("du").stdout, ck("gc", "--dry-run").stdout]
    assert "2.4 MiB logical" in outputs[0]
    for text in outputs:
        assert not DECIMAL_UNITS.search(text), text
        assert re.search(r"\d (B|KiB|MiB)\b", text), text
    assert os.path.getsize(src) == ckj("show")["logical_bytes"]
