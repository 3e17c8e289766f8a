"""Training integrations: commit from the training loop, load without a checkout.

- `ckstore.Checkpointer` (integrations.loop): plain loops, commits in the background.
- `ckstore.snapshot` (integrations.snapshot): a read-only local directory of a revision, from a per-repository
  cache of hard-linked files, that `from_pretrained` opens.
- `integrations.transformers.CkstoreCallback`: a Hugging Face `TrainerCallback` committing every save.
- `integrations.lightning.CkstoreCheckpointIO`: Lightning's `CheckpointIO`, checkpoints as commits.
- `integrations.dcp.CkstoreWriter` / `CkstoreReader`: torch.distributed.checkpoint storage.

Each framework module imports its framework; this package imports none of them.
"""

from __future__ import annotations
