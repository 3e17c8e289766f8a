"""Fixtures shared by the test modules: writing safetensors files and a fresh repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pytest

# The soak tier (RELIABILITY.md): full counts, run with CKSTORE_SOAK=1 and `-m soak` (bench/soak.py runs it).
SOAK = os.environ.get("CKSTORE_SOAK") == "1"
soak = pytest.mark.soak
skip_unless_soak = pytest.mark.skipif(not SOAK, reason="soak test: set CKSTORE_SOAK=1")


def make_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                     metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` to `path` with the official `safetensors.numpy.save_file`; parent directories are created."""
    from safetensors.numpy import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(p), metadata=metadata)
    return p


@pytest.fixture(name="make_safetensors")
def make_safetensors_fixture() -> Callable[..., Path]:
    """The `make_safetensors(path, tensors, metadata=None)` helper, as a fixture."""
    return make_safetensors


@pytest.fixture
def repo(tmp_path: Path):
    """A new, empty repository at tmp_path/"repo" (closed after the test)."""
    import ckstore

    r = ckstore.Repo.init(tmp_path / "repo")
    try:
        yield r
    finally:
        r.close()


from s3servers import moto_endpoint, weed_endpoint  # noqa: E402,F401  (fixtures shared by the S3 test modules)
