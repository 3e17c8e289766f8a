"""The reproducibility verbs of `Repo`: probes, verify, and resume checks."""

from __future__ import annotations

from pathlib import Path

from ..engine import probes, resume
from ..engine.repository import Repository
from ..results.repro import ResumeCheck, VerifyResult


class Repro:
    """Mixed into `Repo` (which provides `engine` and `notes_view`)."""

    engine: Repository

    def add_probe(self, rev: str, inputs: str | Path, loader: str, *, expected: str | Path | None = None,
                  atol: float | None = None, rtol: float | None = None, timeout: float = probes.TIMEOUT) -> dict:
        """Store canonical inputs (an .npz) with commit `rev`, and the outputs `loader` ("module:function",
        called with the checkpoint directory, returning a model called with the inputs) gives now in a fresh
        process (or `expected`, an .npz); the commit's id does not change."""
        return probes.add_probe(self.engine, rev, Path(inputs), loader, expected=Path(expected) if expected else None,
                                atol=atol, rtol=rtol, timeout=timeout)

    def probe(self, rev: str = "HEAD") -> dict | None:
        """The probe of commit `rev`, or None."""
        return probes.probe_of(self.engine, self.notes_view, self.engine.resolve(rev))

    def verify(self, rev: str = "HEAD", *, atol: float | None = None, rtol: float | None = None,
               timeout: float = probes.TIMEOUT) -> VerifyResult:
        """Reload `rev` in a fresh process, run its probe and compare every output within tolerances (by dtype,
        or given); reports the environment drift; the verdict is noted on the commit."""
        return probes.verify(self.engine, self.notes_view, rev, atol=atol, rtol=rtol, timeout=timeout)

    def verify_resume(self, rev: str = "HEAD", *, step_fn: str | None = None, against: str | None = None,
                      atol: float | None = None, rtol: float | None = None) -> ResumeCheck:
        """Whether `rev` holds what a resume needs (model, optimizer, scheduler, step, RNG states); with
        `step_fn` ("module:function(checkpoint_dir, steps) -> arrays") and `against` (a later commit), replay the
        steps between them in a fresh process and compare the weights (and loss) reached."""
        return resume.check_resume(self.engine, rev, step_fn=step_fn, against=against, atol=atol, rtol=rtol)
