"""The web view's JSON API, called directly on a real `ckstore ui` process over loopback HTTP."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ckstore import Repo
from ui.served import Served, start


def test_repo_summary_names_every_ref_by_kind(served, series_repo):
    _, made = series_repo
    repo = served.api("repo")
    assert repo["commits"] == 9
    assert repo["refs"]["branches"] == {"main": made["main"][-1], "ft": made["ft"][-1]}
    assert repo["refs"]["tags"] == {"v1": made["main"][3]}
    assert repo["refs"]["aliases"] == {"prod": made["main"][3]}
    assert repo["refs"]["head"] == {"branch": "main"}


def test_history_lists_every_commit_newest_first_with_lanes(served, series_repo):
    path, made = series_repo
    page = served.api("history")
    with Repo.open(path) as r:
        expected = [c.id for c in r.log(all=True)]
    assert [c["id"] for c in page["commits"]] == expected
    assert page["total"] == 9 and page["width"] == 2
    by_id = {c["id"]: c for c in page["commits"]}
    assert by_id[made["main"][3]]["tags"] == ["v1"] and by_id[made["main"][3]]["aliases"] == ["prod"]
    assert by_id[made["main"][5]]["verified"] is True and "eval" in by_id[made["main"][5]]["notes"]
    assert {by_id[i]["branch"] for i in made["ft"]} == {"ft"}
    assert {by_id[i]["branch"] for i in made["main"]} == {"main"}
    # one edge per parent, from the dot to the parent's lane; an opened lane ends on the parent's own dot
    rows = page["commits"]
    index = {c["id"]: i for i, c in enumerate(rows)}
    for i, row in enumerate(rows):
        assert len(row["edges"]) == len(row["parents"])
        for (a, b, end), parent in zip(row["edges"], row["parents"]):
            assert a == row["col"] and 0 <= b < page["width"]
            if end is not None:
                assert end == index[parent] > i and rows[end]["col"] == b
    fork = by_id[made["main"][2]]  # where ft forked: ft (newer) opened the lane down to it, main joins that lane
    assert by_id[made["ft"][0]]["edges"] == [[by_id[made["ft"][0]]["col"], fork["col"], index[fork["id"]]]]
    assert by_id[made["main"][3]]["edges"] == [[by_id[made["main"][3]]["col"], fork["col"], None]]
    assert by_id[made["main"][3]]["col"] != fork["col"]


def test_history_pages_and_filters(served, series_repo):
    _, made = series_repo
    first, second = served.api("history?offset=0&limit=4"), served.api("history?offset=4&limit=4")
    whole = served.api("history")["commits"]
    assert [c["id"] for c in first["commits"] + second["commits"]] == [c["id"] for c in whole[:8]]
    assert served.api("history?offset=8&limit=4")["commits"] == whole[8:]
    found = served.api("history?where=" + "metrics.loss%20%3C%200.6")
    assert {c["id"] for c in found["commits"]} == set(made["main"][3:]) and found["all"] == 9
    newest = found["commits"][[c["id"] for c in found["commits"]].index(made["main"][3])]
    assert newest["parents"] == []  # its own parents have loss >= 0.6: nothing kept behind it
    assert found["commits"][0]["parents"] == [made["main"][4]]


def test_metric_curves_one_line_per_branch(served, series_repo):
    _, made = series_repo
    loss = served.api("metrics?name=loss")
    lines = {s["label"]: s for s in loss["series"]}
    assert set(lines) == {"main", "ft"}
    assert [p["id"] for p in lines["main"]["points"]] == made["main"]
    assert [p["id"] for p in lines["ft"]["points"]] == made["main"][:3] + made["ft"]
    assert [p["x"] for p in lines["ft"]["points"]] == [0, 100, 200, 300, 400, 500]
    assert lines["main"]["points"][0]["y"] == 2.0
    acc = served.api("metrics?name=notes.eval.acc&by=none&x=index")
    assert [(p["id"], p["y"]) for p in acc["series"][0]["points"]] == [(made["main"][4], 0.71), (made["main"][5], 0.74)]
    names = served.api("metric-names")
    assert names["metrics"] == ["acc", "loss"] and "notes.eval.acc" in names["notes"] and names["params"] == ["params.lr"]


def test_commit_page_data(served, series_repo):
    _, made = series_repo
    c = served.api(f"commit?rev={made['main'][5]}")
    assert c["id"] == made["main"][5] and c["step"] == 500
    assert len(c["tensors"]) == 13 and all("mean" in t["stats"] for t in c["tensors"])
    assert c["verdict"]["passed"] is True and c["probe"]["loader"] == "seriesmodel:load"
    s = c["storage"]
    assert s["logical"] > 0 and 0 < s["unique"] <= s["stored"] and s["new"] <= s["frames"]
    assert c["notes"]["eval"]["acc"] == 0.74
    tagged = served.api("commit?rev=v1")
    assert tagged["id"] == made["main"][3]
    assert {e["ref"] for e in tagged["audit"]} >= {"refs/tags/v1", "refs/aliases/prod"}


def test_diff_and_its_change_map(served, series_repo):
    _, made = series_repo
    d = served.api("diff?a=main~1&b=main")
    assert (d["old"], d["new"]) == (made["main"][4], made["main"][5])
    assert sorted(c["name"] for c in d["tensors"]["changed"]) == made["changed_last"]
    heat = d["heat"]
    (group,) = heat["groups"]
    assert group["name"] == "blocks" and group["rows"] == ["0", "1", "2", "3"]
    assert group["cols"] == ["attn.qkv.weight", "mlp.fc.weight", "norm.weight"]
    changed = [(r, col) for r, row in zip(group["rows"], group["cells"]) for col, cell in zip(group["cols"], row)
               if cell["status"] == "changed"]
    assert changed == [("1", "attn.qkv.weight"), ("1", "mlp.fc.weight")]
    assert [c["name"] for c in heat["other"]] == ["embed.weight"]
    assert d["metrics"]["loss"]["new"] == pytest.approx(1 / 3)


def test_storage_adds_up(served, series_repo):
    s = served.api("storage?by=branch")
    rows = {r["name"]: r for r in s["rows"]}
    assert set(rows) == {"main", "ft"}
    assert all(r["unique"] + r["shared"] == r["stored"] for r in rows.values())
    assert s["disk"]["total"] == s["disk"]["packs"] + s["disk"]["objects"]
    assert len(served.api("storage?by=commit")["rows"]) == 9


@pytest.mark.parametrize("path, status, words", [
    ("/api/commit?rev=nosuchrev", 404, "nosuchrev"),
    ("/api/metrics?name=loss&x=epoch", 400, "unknown x axis"),
    ("/api/metrics", 400, "needs ?name="),
    ("/api/history?limit=ten", 400, "whole number"),
    ("/api/diff?a=main&b=nosuch", 404, "nosuch"),
    ("/api/nothing", 404, "no API endpoint"),
])
def test_bad_requests_get_a_clear_json_error(served, path, status, words):
    code, body, _ = served.get(path)
    assert code == status and words in body["error"]


def test_assets_come_from_the_package_and_nothing_else(served):
    code, body, headers = served.get("/")
    assert code == 200 and b"/static/app.js" in body and b"http" not in body.replace(b"http-equiv", b"")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in ("app.js", "util.js", "chart.js", "history.js", "metrics.js", "commit.js", "diff.js", "storage.js",
                 "app.css"):
        code, body, _ = served.get("/static/" + name)
        assert code == 200 and len(body) > 500
        assert b"https://" not in body and b"//cdn" not in body  # nothing from the network
    for bad in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/.hidden", "/server.py", "/static/"):
        assert served.get(bad)[0] == 404


def test_read_only_and_loopback_host_names_only(served):
    import urllib.request
    req = urllib.request.Request(served.url + "/api/repo", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 405
    # a page on another site resolving its own name to 127.0.0.1 (DNS rebinding) is refused
    assert served.get("/api/repo", {"Host": "attacker.example:8471"})[0] == 403
    assert served.get("/api/repo", {"Host": "localhost:1234"})[0] == 200
    assert served.get("/api/repo", {"Host": "[::1]:1234"})[0] == 200


def test_a_token_guards_every_request(series_repo):
    proc, url = start(series_repo[0], "--token", "s3cret-token")
    try:
        assert "?token=s3cret-token" in url
        s = Served(proc, url.split("?")[0])
        code, body, _ = s.get("/api/repo")
        assert code == 401 and "token" in body["error"]
        assert s.get("/")[0] == 401
        assert s.get("/api/repo?token=wrong")[0] == 401
        code, _, headers = s.get("/?token=s3cret-token")
        assert code == 200 and "ckstore_token=s3cret-token" in headers["Set-Cookie"]
        assert "HttpOnly" in headers["Set-Cookie"]
        assert s.get("/api/repo", {"Cookie": "ckstore_token=s3cret-token"})[0] == 200
        assert s.get("/api/repo", {"Authorization": "Bearer s3cret-token"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_off_loopback_a_fresh_token_is_required(series_repo):
    # bound on every interface, but only ever asked over loopback here
    proc, url = start(series_repo[0], "--host", "0.0.0.0")
    try:
        token = url.split("?token=", 1)[1]
        assert len(token) >= 24
        port = url.split(":")[2].split("/")[0]
        s = Served(proc, f"http://127.0.0.1:{port}")
        assert s.get("/api/repo")[0] == 401
        assert s.get(f"/api/repo?token={token}")[0] == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "warning: listening on 0.0.0.0" in err


def test_a_busy_port_is_a_clear_error(served, series_repo):
    port = served.url.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "ckstore", "-C", str(series_repo[0]), "ui", "--port", port],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"error: cannot listen on 127.0.0.1:{port}" in done.stderr and "hint: pick another --port" in done.stderr


def test_tensor_histogram(served, series_repo):
    _, made = series_repo
    h = served.api("hist?rev=main&tensor=blocks.1.attn.qkv.weight")
    assert h["rev"] == made["main"][5] and h["shape"] == [48, 16] and len(h["edges"]) == len(h["counts"]) + 1
    assert sum(h["counts"]) == h["count"] - h["zeros"] - h["nan"] - h["inf"] == 48 * 16
    assert h["hist_of"] == h["count"]  # a small tensor: every element binned
    assert h["computed"] is False  # stored at commit time
    norm = served.api("hist?rev=main&tensor=blocks.0.norm.weight")  # all ones: one octave, [1, 2)
    (k,) = [i for i, c in enumerate(norm["counts"]) if c]
    assert norm["counts"][k] == 16 and norm["edges"][k] == 1.0
    code, body, _ = served.get("/api/hist?rev=main&tensor=nosuch")
    assert code == 400 and "nosuch" in body["error"]


def test_json_start_line_for_scripts(series_repo):
    import json as jsonlib
    proc = subprocess.Popen([sys.executable, "-m", "ckstore", "-C", str(series_repo[0]), "ui", "--port", "0",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = jsonlib.loads(proc.stdout.readline())
        assert started["host"] == "127.0.0.1" and started["url"] == f"http://127.0.0.1:{started['port']}/"
        assert started["dir"].endswith(".ckstore")
        assert Served(proc, started["url"]).api("repo")["commits"] == 9
    finally:
        proc.terminate()
        proc.wait(timeout=10)
