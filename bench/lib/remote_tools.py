"""The tools of bench/remote.py (ckstore, DVC, restic): a local record, a push to a remote, a clone from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .envs import tool_env
from .measure import Run, apparent_bytes, files_under, run
from .remote_s3 import BUCKET, S3_KEY, S3_SECRET, CountingProxy, S3Server
from .tools import Ckstore


class Meter:
    """Sums what several commands of one step cost: wall, cpu, rchar, wchar, wire bytes through the proxy."""

    def __init__(self, proxy: CountingProxy | None) -> None:
        self.proxy = proxy
        self.wall = self.cpu = 0.0
        self.rchar = self.wchar = self.maxrss = 0
        self.up0, self.down0 = proxy.snapshot() if proxy else (0, 0)
        self.runs: list[Run] = []

    def add(self, r: Run) -> Run:
        self.wall += r.wall
        self.cpu += r.cpu
        self.maxrss = max(self.maxrss, r.maxrss)
        self.rchar += r.rchar
        self.wchar += r.wchar
        self.runs.append(r)
        return r

    def figures(self) -> dict[str, Any]:
        up, down = self.proxy.snapshot() if self.proxy else (self.up0, self.down0)
        return {"wall": self.wall, "cpu": self.cpu, "maxrss": self.maxrss, "rchar": self.rchar, "wchar": self.wchar,
                "wire_up": up - self.up0 if self.proxy else None, "wire_down": down - self.down0 if self.proxy else None}



class Remote:
    """One remote of one tool in one repeat: where it is and how to measure what it stores."""

    def __init__(self, kind: str, tool: str, base: Path, prefix: str, s3: S3Server | None,
                 proxy: CountingProxy | None) -> None:
        self.kind, self.s3, self.proxy = kind, s3, proxy
        self.path = base / "remotes" / tool  # directory remote
        self.prefix = prefix                 # S3: bucket prefix
        self.name = kind                     # the name the tool knows it by

    @property
    def endpoint(self) -> str:
        return self.proxy.endpoint if self.proxy else self.s3.endpoint  # type: ignore[union-attr]

    def stored(self) -> tuple[int, int]:
        if self.kind == "dir":
            return apparent_bytes(self.path), len(files_under(self.path)) if self.path.exists() else 0
        return self.s3.stored(self.prefix)  # type: ignore[union-attr]

    def cleanup(self) -> None:
        if self.kind == "dir":
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.s3.delete_prefix(self.prefix)  # type: ignore[union-attr]


class Tool:
    """A tool of the remotes benchmark: init with its remotes, record version i, push it, clone the newest."""

    name = "?"

    def __init__(self, d: Path, env: dict[str, str], envs: Path) -> None:
        self.dir, self.env, self.envs = d, env, envs

    def sh(self, m: Meter | None, cmd: list[Any], cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
        r = run(cmd, cwd=cwd, env=env or self.env, io=True)
        return m.add(r) if m else r

    def init(self, remotes: list[Remote]) -> None: ...
    def record(self, i: int, src: Path, m: Meter) -> None: ...
    def push(self, i: int, remote: Remote, m: Meter) -> dict: ...
    def clone(self, remote: Remote, dest: Path, env: dict[str, str], m: Meter) -> dict: ...


class CkstoreTool(Tool):
    name = "ckstore"

    @property
    def repo(self) -> Path:
        return self.dir / "repo"

    def url(self, remote: Remote) -> list[str]:
        if remote.kind == "dir":
            return [str(remote.path)]
        return [f"s3://{BUCKET}/{remote.prefix}", "--endpoint-url", remote.endpoint]

    def init(self, remotes: list[Remote]) -> None:
        self.repo.mkdir(parents=True)
        self.sh(None, Ckstore.cmd("init", self.repo))
        for r in remotes:
            self.sh(None, Ckstore.cmd("-C", self.repo, "remote", "add", r.name, *self.url(r)))

    def record(self, i: int, src: Path, m: Meter) -> None:
        self.sh(m, Ckstore.cmd("-C", self.repo, "commit", src, "-m", f"v{i}", "--json"))

    def push(self, i: int, remote: Remote, m: Meter) -> dict:
        r = self.sh(m, Ckstore.cmd("-C", self.repo, "push", remote.name, "--json"))
        j = json.loads(r.out)
        return {"reported_sent": j["bytes_sent"], "reported_logical": j["logical_bytes"], "chunks": j["chunks"],
                "packs": j["packs"]}

    def clone(self, remote: Remote, dest: Path, env: dict[str, str], m: Meter, filt: str | None = None) -> dict:
        repo = dest.parent / (dest.name + "-repo")
        url = self.url(remote)
        args = ["clone", url[0], repo, *url[1:], "--json"] + (["--filter", filt] if filt else [])
        r = self.sh(m, Ckstore.cmd(*args), env=env)
        j = json.loads(r.out)
        clone_wall = r.wall
        after_clone = apparent_bytes(repo / ".ckstore", exclude=[repo / ".ckstore" / "cache"])
        mc = Meter(m.proxy)  # the checkout alone, for the split
        self.sh(mc, Ckstore.cmd("-C", repo, "checkout", "main", "-o", dest), env=env)
        m.add(mc.runs[0])
        return {"reported_received": j["bytes_received"], "reported_logical": j["logical_bytes"],
                "clone_wall": clone_wall, "checkout_wall": mc.wall, "checkout": mc.figures(),
                "local_store_after_clone": after_clone,
                "local_store": apparent_bytes(repo / ".ckstore", exclude=[repo / ".ckstore" / "cache"])}


    def fused(self, remote: Remote, dest: Path, env: dict[str, str], m: Meter, depth: int | None) -> dict:
        """`clone URL REPO --checkout DEST` (with `--depth N`): the files written while the data arrives."""
        repo = dest.parent / (dest.name + "-repo")
        url = self.url(remote)
        args = ["clone", url[0], repo, *url[1:], "--json", "--checkout", dest]
        r = self.sh(m, Ckstore.cmd(*args + (["--depth", str(depth)] if depth else [])), env=env)
        j = json.loads(r.out)
        return {"reported_received": j["bytes_received"], "reported_logical": j["logical_bytes"],
                "local_store": apparent_bytes(repo / ".ckstore", exclude=[repo / ".ckstore" / "cache"])}


class DvcTool(Tool):
    name = "dvc"

    @property
    def bin(self) -> Path:
        return self.envs / "bin" / "dvc"

    @property
    def ws(self) -> Path:
        return self.dir / "ws"

    def add_remote(self, ws: Path, remote: Remote, env: dict[str, str], default: bool = False) -> None:
        url = str(remote.path) if remote.kind == "dir" else f"s3://{BUCKET}/{remote.prefix}"
        self.sh(None, [self.bin, "remote", "add", *(["-d"] if default else []), remote.name, url], cwd=ws, env=env)
        if remote.kind == "s3":
            for k, v in (("endpointurl", remote.endpoint), ("region", "us-east-1")):
                self.sh(None, [self.bin, "remote", "modify", remote.name, k, v], cwd=ws, env=env)

    def init_ws(self, ws: Path, env: dict[str, str]) -> None:
        ws.mkdir(parents=True)
        self.sh(None, [self.bin, "init", "--no-scm", "-q"], cwd=ws, env=env)
        self.sh(None, [self.bin, "config", "core.analytics", "false"], cwd=ws, env=env)

    def init(self, remotes: list[Remote]) -> None:
        self.init_ws(self.ws, self.env)
        for r in remotes:
            if r.kind == "dir":
                r.path.mkdir(parents=True, exist_ok=True)
            self.add_remote(self.ws, r, self.env)

    def record(self, i: int, src: Path, m: Meter) -> None:
        ck = self.ws / "ckpt"
        shutil.rmtree(ck, ignore_errors=True)
        shutil.copytree(src, ck)  # the workspace a training run would have written (untimed, not metered)
        self.sh(m, [self.bin, "add", "-q", "ckpt"], cwd=self.ws)

    def push(self, i: int, remote: Remote, m: Meter) -> dict:
        r = self.sh(m, [self.bin, "push", "-r", remote.name], cwd=self.ws)
        return {"output": r.out.strip().splitlines()[-1:] if r.out.strip() else []}

    def clone(self, remote: Remote, dest: Path, env: dict[str, str], m: Meter) -> dict:
        self.init_ws(dest, env)
        self.add_remote(dest, remote, env, default=True)
        shutil.copyfile(self.ws / "ckpt.dvc", dest / "ckpt.dvc")  # what `git clone` of the project would bring
        r = self.sh(m, [self.bin, "pull", "-r", remote.name], cwd=dest, env=env)
        return {"cache_bytes": apparent_bytes(dest / ".dvc" / "cache"), "restored": str(dest / "ckpt"),
                "output": r.out.strip().splitlines()[-1:] if r.out.strip() else []}


class ResticTool(Tool):
    name = "restic"

    @property
    def repo(self) -> Path:
        return self.dir / "repo"

    def url(self, remote: Remote) -> str:
        if remote.kind == "dir":
            return str(remote.path)
        return f"s3:{remote.endpoint}/{BUCKET}/{remote.prefix}"

    def init(self, remotes: list[Remote]) -> None:
        self.pwfile = self.dir / "password"
        self.pwfile.write_text(self.env["RESTIC_PASSWORD"])
        self.sh(None, ["restic", "-r", self.repo, "init", "--repository-version", "2"])
        for r in remotes:
            # same chunker parameters as the local repository, so copies deduplicate like the source
            self.sh(None, ["restic", "-r", self.url(r), "init", "--repository-version", "2", "--copy-chunker-params",
                           "--from-repo", self.repo, "--from-password-file", self.pwfile])

    def record(self, i: int, src: Path, m: Meter) -> None:
        self.sh(m, ["restic", "-r", self.repo, "backup", "--compression", "auto", "--host", "bench", "-q", "."],
                cwd=src)

    def push(self, i: int, remote: Remote, m: Meter) -> dict:
        r = self.sh(m, ["restic", "-r", self.url(remote), "copy", "--from-repo", self.repo, "--from-password-file",
                        self.pwfile])
        return {"output": [ln for ln in r.out.splitlines() if ln.strip()][-2:]}

    def clone(self, remote: Remote, dest: Path, env: dict[str, str], m: Meter) -> dict:
        self.sh(m, ["restic", "-r", self.url(remote), "restore", "latest", "--target", dest], env=env)
        return {}


TOOLS: dict[str, type[Tool]] = {"ckstore": CkstoreTool, "dvc": DvcTool, "restic": ResticTool}


def bench_env(d: Path, envs_dir: Path) -> dict[str, str]:
    """envs.tool_env (HOME, XDG_*, DVC/restic caches into d/home) plus dummy S3 credentials, nothing else AWS."""
    env = tool_env(d, envs_dir)
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_REGION="us-east-1",
               AWS_DEFAULT_REGION="us-east-1", AWS_SHARED_CREDENTIALS_FILE=str(d / "home" / "no-aws-credentials"),
               AWS_CONFIG_FILE=str(d / "home" / "no-aws-config"), AWS_EC2_METADATA_DISABLED="true",
               RESTIC_CACHE_DIR=str(d / "home" / ".cache" / "restic"))
    return env
