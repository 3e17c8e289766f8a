"""The lifecycle verbs of `Repo`: retention (`forget`), garbage collection (`gc`) and storage accounting (`du`)."""

from __future__ import annotations

from dataclasses import replace

from ..engine import forget as retention
from ..engine.accounting import du
from ..engine.gc import DEFAULT_GRACE, gc
from ..engine.repository import Repository
from ..errors import UsageError
from ..fs.locks import LOCK_WAIT
from ..model.progress import Progress
from ..model.retention import Policy
from ..results import DuReport, ForgetResult, GcResult


class Lifecycle:
    """Mixed into `Repo` (which provides `engine`)."""

    engine: Repository

    def forget(self, policy: Policy | dict | None = None, *, dry_run: bool = False, save: bool = False,
               auto: bool | None = None) -> ForgetResult:
        """Apply a retention policy (a `Policy`, its dict, or None for the one saved in the config): dropped
        commits keep their records and stop being history; gc frees their bytes. `save` stores the policy in
        the config; `auto` (with `save`) applies it after every commit."""
        if policy is None:
            chosen = retention.saved_policy(self.engine)
        else:
            chosen = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
        result = retention.forget(self.engine, chosen, dry_run=dry_run)
        if save and not dry_run:
            self.save_policy(chosen, auto=bool(auto))
        return result

    def save_policy(self, policy: Policy | None, *, auto: bool = False) -> None:
        """Store (or, with None, remove) the repository's retention policy; `auto` runs it after each commit."""
        cfg = self.engine.config
        kept = {k: v for k, v in cfg.retention.items() if k not in ("policy", "auto")}
        if policy is not None:
            kept.update(policy=policy.to_dict(), auto=auto)
        self._save_config(replace(cfg, retention=kept))

    def set_prices(self, prices: dict[str, float]) -> None:
        """Prices per GiB-month by tier ("local", or a remote's name), for `du`'s monthly cost column."""
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in prices.values()):
            raise UsageError("prices are numbers ≥ 0 (per GiB and month)")
        cfg = self.engine.config
        merged = {**cfg.retention.get("prices", {}), **prices}
        self._save_config(replace(cfg, retention={**cfg.retention, "prices": merged}))

    def _save_config(self, cfg) -> None:
        self.engine.config = cfg.save(self.engine.dir / "config", self.engine.dir / "tmp")

    def auto_forget(self) -> ForgetResult | None:
        """The saved policy, applied when it is marked `auto` (after each commit); None otherwise."""
        saved = self.engine.config.retention
        if not saved.get("auto") or not saved.get("policy"):
            return None
        return retention.forget(self.engine, Policy.from_dict(saved["policy"]))

    def gc(self, *, grace: float = DEFAULT_GRACE, now: bool = False, dry_run: bool = False,
           wait: float = LOCK_WAIT, max_unused: float | None = 0.10, progress: Progress | None = None,
           invert: bool = False) -> GcResult:
        """Collect garbage: unreferenced packs and objects go to tombstones, tombstones past `grace` seconds are
        deleted; `now` skips the grace period (refused while a writer runs). Packs with more than `max_unused`
        of garbage are rewritten (None: no repack); `invert` also turns delta chains around (see `repack`)."""
        repacker = None
        if max_unused is not None or invert:
            from ..engine.repack import repacker_for
            repacker = repacker_for(1.0 if max_unused is None else max_unused, invert=invert, progress=progress)
        return gc(self.engine, grace=grace, now=now, dry_run=dry_run, wait=wait, repack=repacker, progress=progress)

    def repack(self, max_unused: float = 0.10, invert: bool = True, progress: Progress | None = None) -> GcResult:
        """Rewrite packs on their own (under gc's locks): packs over `max_unused` garbage and small packs are
        rewritten, kept chunks whose bases only dropped commits used are re-encoded, and with `invert` each
        branch tip becomes full frames with older versions stored as deltas against newer ones. The old packs
        go to tombstones (other garbage keeps gc's grace period)."""
        from ..engine.repack import repack_now
        return repack_now(self.engine, max_unused=max_unused, invert=invert, progress=progress)

    def du(self, revs: list[str] | None = None, *, by: str = "commit") -> DuReport:
        """Storage per commit (default: every kept commit, or `revs`), branch or tag: logical, stored, unique
        (what dropping it frees) and shared bytes; plus the repository's totals on disk."""
        oids = [self.engine.resolve(r) for r in revs] if revs else None
        return du(self.engine, by, oids, self.engine.config.retention.get("prices"))
