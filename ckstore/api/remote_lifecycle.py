"""The remote side of the lifecycle verbs of `Repo`: gc and retention on a remote, the cold tier (archive and
restore-archive) and remote groups (replicas)."""

from __future__ import annotations

from ..engine.repository import Repository
from ..model.progress import Progress
from ..model.retention import Policy, parse_duration
from ..results import ForgetResult, GcResult
from ..storage import remotes


class RemoteLifecycle:
    """Mixed into `Repo` (which provides `engine`)."""

    engine: Repository

    def gc_remote(self, name: str, *, grace: float = 3600, now: bool = False, dry_run: bool = False) -> GcResult:
        """Delete what no branch, tag or archive ref of the remote `name` (nor its push log within `grace`
        seconds) reaches, once it has been unreferenced for `grace` seconds; safe against concurrent pushes
        (remote leases). `now`: no grace, refused while a push runs. Returns a GcResult (`RemoteGcResult`)."""
        from ..sync.remote_gc import gc_remote
        return gc_remote(self.engine, name, grace=grace, now=now, dry_run=dry_run)

    def forget_remote(self, name: str, policy: Policy | dict, *, dry_run: bool = False) -> ForgetResult:
        """Apply a retention policy to the remote `name`'s history: dropped commits get records there, tags naming
        only dropped commits are deleted there; `gc_remote` frees the bytes."""
        from ..sync.remote_gc import forget_remote
        chosen = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
        return forget_remote(self.engine, name, chosen, dry_run=dry_run)

    def archive(self, revs: str | list[str] | None = None, *, older_than: str | float | None = None, to: str,
                progress: Progress | None = None):
        """Move the chunks only these commits use (a rev, "A..B", a list of them, or those older than
        `older_than`: "30d" or seconds) to the remote `to`, verified there; then they are fetched from it on
        demand and the next `gc` frees them here. Returns an `ArchiveResult`."""
        from ..sync.archive import archive, select_commits
        from ..sync.on_demand import Tiered
        age = parse_duration(older_than) if isinstance(older_than, str) else older_than
        commits = select_commits(self.engine, revs, age)
        result = archive(self.engine, commits, to, progress=progress)
        if not isinstance(self.engine.chunk_source, Tiered):
            self.engine.chunk_source = Tiered(remotes.partial_remote(self.engine.dir))
        return result

    def restore_archive(self, rev: str | list[str], *, progress: Progress | None = None):
        """Bring back the chunks of archived commits (a rev, "A..B", or a list) and remove their records."""
        from ..sync.archive import restore_archive
        commits = []
        for r in [rev] if isinstance(rev, str) else rev:
            if ".." in r:
                from ..model import graph
                a, b = r.split("..", 1)
                hidden = graph.ancestors(self.engine.resolve(a or "HEAD"), self.engine.parents)
                commits += [c for c in graph.ancestors(self.engine.resolve(b or "HEAD"), self.engine.parents)
                            if c not in hidden and c in self.engine.archived]
            else:
                commits.append(self.engine.resolve(r))
        return restore_archive(self.engine, list(dict.fromkeys(commits)), progress=progress)

    def remote_add_group(self, name: str, members: list[str]) -> list[str]:
        """A group of remotes: `push(name)` pushes to every member, `fsck(remote=name)` checks each."""
        return remotes.add_group(self.engine.dir, name, list(members))

    def remote_remove_group(self, name: str) -> list[str]:
        """Forget a group (its members stay)."""
        return remotes.remove_group(self.engine.dir, name)

    def remote_groups(self) -> dict[str, list[str]]:
        """Every remote group with its members."""
        return remotes.groups(self.engine.dir)

    def min_replicas(self) -> int | None:
        """The number of remotes each commit should be on (None: not set)."""
        return remotes.min_replicas(self.engine.dir)

    def set_min_replicas(self, n: int | None) -> None:
        """The number of remotes each commit should be on (`du --by remote` names commits on fewer)."""
        remotes.set_min_replicas(self.engine.dir, n)
