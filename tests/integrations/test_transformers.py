"""A tiny Hugging Face Trainer run (2-layer BERT from a config, no download) with CkstoreCallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # Trainer needs it

import ckstore  # noqa: E402
from ckstore.integrations.transformers import CkstoreCallback  # noqa: E402


def tiny_bert() -> transformers.PreTrainedModel:
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def dataset(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (n, 8), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
             "labels": int(ids[i, 0] % 2)} for i in range(n)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, transformers.Trainer]:
    tmp = tmp_path_factory.mktemp("hf")
    args = transformers.TrainingArguments(
        output_dir=str(tmp / "out"), max_steps=6, save_steps=2, eval_strategy="steps", eval_steps=2,
        logging_steps=1, per_device_train_batch_size=4, per_device_eval_batch_size=8, learning_rate=1e-3,
        metric_for_best_model="eval_loss", greater_is_better=False, save_total_limit=1, report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=tiny_bert(), args=args, train_dataset=dataset(24, 1),
                                   eval_dataset=dataset(8, 2),
                                   callbacks=[CkstoreCallback(tmp / "repo", alias_best="best")])
    trainer.train()
    return tmp / "repo", tmp / "out", trainer


def test_every_save_is_a_commit_with_its_step_and_metrics(run) -> None:
    repo_dir, out, trainer = run
    with ckstore.Repo.open(repo_dir) as repo:
        log = list(reversed(repo.log()))
        assert [c.step for c in log] == [2, 4, 6] and [c.message for c in log] == [
            "checkpoint-2", "checkpoint-4", "checkpoint-6"]
        history = trainer.state.log_history
        for c in log:
            train = [e for e in history if e.get("step") == c.step and "loss" in e][-1]
            evals = [e for e in history if e.get("step") == c.step and "eval_loss" in e][-1]
            assert c.metrics["loss"] == pytest.approx(train["loss"])
            assert c.metrics["eval_loss"] == pytest.approx(evals["eval_loss"])
            assert c.params["learning_rate"] == 1e-3 and c.params["max_steps"] == 6
            assert c.extra["model_config"]["num_hidden_layers"] == 2
            assert c.extra["trainer"]["best_model_checkpoint"].startswith("checkpoint-")
        best = Path(trainer.state.best_model_checkpoint).name
        [alias] = [a for a in repo.aliases() if a.name == "best"]
        assert repo.show(alias.id).commit.message == best  # the alias follows state.best_model_checkpoint
    on_disk = [p.name for p in out.iterdir() if p.name.startswith("checkpoint-")]
    assert len(on_disk) < 3  # save_total_limit rotated the directories; the store kept every commit


def test_from_pretrained_on_a_snapshot_gives_the_same_outputs(run, tmp_path: Path) -> None:
    repo_dir, out, trainer = run
    path = ckstore.snapshot(repo_dir, "HEAD", exclude=["optimizer.pt", "scheduler.pt", "rng_state*"],
                            cache_dir=tmp_path / "cache")
    assert (path / "config.json").is_file() and not (path / "optimizer.pt").exists()
    model = transformers.BertForSequenceClassification.from_pretrained(path).eval()
    original = trainer.model.eval()
    batch = {k: torch.stack([d[k] for d in dataset(4, 3)]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, original(**batch).logits)
    again = ckstore.snapshot(repo_dir, "HEAD", exclude=["optimizer.pt", "scheduler.pt", "rng_state*"],
                             cache_dir=tmp_path / "cache")
    assert again == path  # reused


def test_committing_a_trainer_directory_reads_trainer_state(tmp_path: Path) -> None:
    ck = tmp_path / "checkpoint-30"
    ck.mkdir()
    (ck / "config.json").write_text("{}")
    (ck / "trainer_state.json").write_text(json.dumps({
        "global_step": 30, "epoch": 1.5, "best_metric": 0.25, "best_model_checkpoint": "/x/out/checkpoint-20",
        "log_history": [{"step": 10, "loss": 0.9}, {"step": 20, "eval_loss": 0.25}, {"step": 30, "loss": 0.5},
                        {"step": 40, "loss": 0.1}]}))
    with ckstore.Repo.init(tmp_path / "r") as repo:
        info = repo.commit(ck, "from trainer_state", capture_env=False)
        c = repo.log()[0]
        assert info.id == c.id and c.step == 30 and c.metrics == {"loss": 0.5, "eval_loss": 0.25}
        assert c.extra["trainer"] == {"epoch": 1.5, "best_metric": 0.25, "best_model_checkpoint": "checkpoint-20"}
        repo.commit(ck, "given", step=3, metrics={"acc": 1.0}, capture_env=False)
        assert (repo.log()[0].step, repo.log()[0].metrics) == (3, {"acc": 1.0})  # what the user gives wins
        (ck / "trainer_state.json").write_text("{not json")
        with pytest.raises(ckstore.errors.InvalidMetadata, match="trainer_state.json is not valid JSON"):
            repo.commit(ck, "broken", capture_env=False)
        assert len(repo.log()) == 2  # nothing committed
        repo.commit(ck, "explicit", step=1, metrics={"a": 1}, meta={"extra": {"trainer": {}}}, capture_env=False)
