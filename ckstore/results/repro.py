"""What the reproducibility verbs return: per-output checks, verdicts and resume checks (pure data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class OutputCheck:
    """One output of a probe: whether it matched, and by how much it differed."""

    name: str
    passed: bool
    detail: str
    max_abs: float | None = None
    max_rel: float | None = None
    atol: float | None = None
    rtol: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return asdict(self)


@dataclass
class VerifyResult:
    """A verify run: the commit, the loader, every output's check, the environment drift, and the verdict."""

    commit: str
    loader: str
    outputs: list[OutputCheck] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    passed: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {**asdict(self), "outputs": [o.to_dict() for o in self.outputs]}


@dataclass
class ResumeCheck:
    """What a checkpoint holds for a resume (component -> where it was found, or None), and a replay's checks."""

    commit: str
    components: dict = field(default_factory=dict)
    replay: list[OutputCheck] = field(default_factory=list)
    passed: bool = False
    error: str | None = None

    @property
    def missing(self) -> list[str]:
        """The components not found."""
        return [k for k, v in self.components.items() if v is None]

    def to_dict(self) -> dict:
        """JSON-ready data."""
        return {**asdict(self), "replay": [o.to_dict() for o in self.replay], "missing": self.missing}
