"""A Lightning run saves through CkstoreCheckpointIO (also under AsyncCheckpointIO) and resumes from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

from lightning.pytorch.plugins.io import AsyncCheckpointIO  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import ckstore  # noqa: E402
from ckstore.integrations.lightning import CkstoreCheckpointIO  # noqa: E402


class Tiny(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)}


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)), batch_size=8)


def trainer(plugin, tmp: Path, epochs: int, **kw) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, plugins=[plugin], logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(tmp), **kw)


def test_save_resume_and_remove_through_the_checkpoint_io(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", monitor="step", mode="max",
                                               save_top_k=1, save_last=True)  # a new best every epoch
    first = trainer(AsyncCheckpointIO(CkstoreCheckpointIO(repo)), tmp_path, 2, callbacks=[ckpt])
    torch.manual_seed(0)
    model = Tiny()
    first.fit(model, loader())
    assert first.global_step == 8, first.global_step
    pointer = json.loads((tmp_path / "ck" / "last.ckpt").read_text())
    assert pointer["format"] == "ckstore-pointer"
    with ckstore.Repo.open(repo) as r:
        steps = sorted(c.step for c in r.log())
        assert steps and steps[-1] == 8 and all(c.metrics["best_step"] == c.step for c in r.log())
        aliases = {a.name for a in r.aliases()}
        assert "lightning/last.ckpt" in aliases
        kept = [p.name for p in (tmp_path / "ck").iterdir() if p.name != "last.ckpt"]
        assert len(kept) == 1 and f"lightning/{kept[0]}" in aliases  # top-1: the others' aliases were dropped
        n_commits = len(r.log())

    io = CkstoreCheckpointIO(repo)
    loaded = io.load_checkpoint(tmp_path / "ck" / "last.ckpt")
    assert loaded["global_step"] == 8
    assert loaded["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0125)
    assert torch.equal(loaded["state_dict"]["layer.weight"], model.layer.weight.detach())
    assert io.load_checkpoint(f"ckstore://{pointer['commit']}")["epoch"] == loaded["epoch"]

    second = trainer(io, tmp_path, 3)
    resumed = Tiny()
    second.fit(resumed, loader(), ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert second.global_step == 12 and second.current_epoch == 3  # went on from step 8, epoch 2
    assert second.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.05 * 0.5 ** 3)

    io.remove_checkpoint(tmp_path / "ck" / "last.ckpt")
    assert not (tmp_path / "ck" / "last.ckpt").exists()
    with ckstore.Repo.open(repo) as r:
        assert "lightning/last.ckpt" not in {a.name for a in r.aliases()}
        assert len(r.log()) >= n_commits  # the data stays in history


def test_a_foreign_file_is_refused_not_unpickled(tmp_path: Path) -> None:
    (tmp_path / "evil.ckpt").write_bytes(b"\x80\x04cos\nsystem\n.")
    with pytest.raises(ckstore.errors.CkstoreError, match="is not a ckstore checkpoint pointer"):
        CkstoreCheckpointIO(tmp_path / "repo").load_checkpoint(tmp_path / "evil.ckpt")
