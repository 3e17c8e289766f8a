"""TorchScript archives (torch.jit.save) read as tensors: the module's parameters and buffers named by their
attribute paths, the code and constants kept as they are, nothing run; a hostile archive stays opaque."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ckstore.formats import scan_buffer
from conftest import joined, two_versions

torch = pytest.importorskip("torch")


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(16, 8)
        self.register_buffer("scale", torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.scale


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(32, 16)
        self.block = Block()
        self.head = torch.nn.Linear(8, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(ids)))


def _saved(path: Path, net: torch.nn.Module) -> bytes:
    torch.jit.save(torch.jit.script(net), str(path))
    return path.read_bytes()


def test_parameters_and_buffers_named_code_kept(tmp_path):
    torch.manual_seed(0)
    data = _saved(tmp_path / "net.pt", Net())
    sf = scan_buffer("net.pt", memoryview(data))
    got = {s.tensor.name: s.tensor.shape for s in sf.tensors()}
    assert got == {"embed.weight": (32, 16), "block.proj.weight": (8, 16), "block.proj.bias": (8,),
                   "block.scale": (8,), "head.weight": (4, 8), "head.bias": (4,)}
    assert joined(sf) == data
    code = [n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if "/code/" in n]
    assert code                                       # the code is in the archive, stored as it is


class Typed(torch.nn.Module):
    """Attributes TorchScript pickles through torch.jit._pickle: typed lists and a Dict (restore_type_tag); their
    types are inferred from the values."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.sizes, self.gains, self.flags = [1, 2, 3], [0.5, 0.25], [True, False]
        self.extra = [torch.full((3,), 7.0)]
        self.table = {"bias": torch.arange(5, dtype=torch.float32)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.extra[0].sum() + self.table["bias"].sum()


def test_typed_list_and_dict_attributes_are_read_and_the_jit_suffix_too(tmp_path):
    torch.manual_seed(0)
    data = _saved(tmp_path / "typed.jit", Typed())
    sf = scan_buffer("typed.jit", memoryview(data))
    got = {s.tensor.name: s.tensor.shape for s in sf.tensors()}
    assert got == {"lin.weight": (4, 4), "lin.bias": (4,), "extra.0": (3,), "table.bias": (5,)}
    assert joined(sf) == data


def test_a_fine_tuned_release_dedups_and_diffs_tensor_by_tensor(tmp_path):
    torch.manual_seed(0)
    net = Net()
    one = _saved(tmp_path / "a.pt", net)
    with torch.no_grad():
        net.head.weight += 0.5                       # one tensor changes between the releases
    two = _saved(tmp_path / "b.pt", net)
    repo, a, b = two_versions(tmp_path, "model.pt", one, two)
    diff = repo.diff(a.id, b.id).tensors
    assert [t["name"] for t in diff["changed"]] == ["head.weight"]
    assert "embed.weight" in diff["unchanged"]
    assert repo.show(b.id).new_bytes < 16384        # the changed tensor and the archive's small members
    repo.close()


def _replace_pickle(archive: bytes, payload: bytes) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = payload if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info.filename, body, zipfile.ZIP_STORED)
    return out.getvalue()


def test_hostile_script_archives_stay_opaque(tmp_path):
    archive = _saved(tmp_path / "net.pt", Net())
    payloads = {
        "newobj outside __torch__": b"\x80\x02cpathlib\nPath\n)\x81.",
        "a global call": b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00truep\x01\x85q\x02Rq\x03.",
        "non-dict state": b"\x80\x02c__torch__\nNet\n)\x81K\x01b.",
    }
    for name, payload in payloads.items():
        blob = _replace_pickle(archive, payload)
        sf = scan_buffer(f"{name}.pt", memoryview(blob))
        assert sf.tensors() == [] and joined(sf) == blob, name
