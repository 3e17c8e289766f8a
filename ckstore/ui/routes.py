"""The JSON API of the web view: one function per endpoint, each answering from the repository through
`ckstore.views`. The history is laid out once per state of the refs and then served in pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import UsageError
from ..views import history, metrics, pages

if TYPE_CHECKING:
    from ..api import Repo

MAX_PAGE = 5000


class Routes:
    """Endpoint name -> handler(query) -> JSON-ready data, over one open repository."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._history: dict[tuple, dict] = {}
        self._du: tuple[tuple, dict] | None = None
        self.table: dict[str, Callable[[dict[str, str]], Any]] = {
            "repo": self.summary, "history": self.history, "commit": self.commit, "diff": self.diff,
            "hist": self.hist, "metrics": self.metrics, "metric-names": self.metric_names,
            "storage": self.storage}

    def find(self, path: str) -> Callable[[dict[str, str]], Any] | None:
        """The handler (called with the query) for /api/PATH, or None."""
        return self.table.get(path.strip("/"))

    def _stamp(self) -> tuple:
        """Every ref and its value: what the cached views depend on (a commit, a note, a gc moves one)."""
        return tuple(sorted(self.repo.engine.refs.list().items()))

    def _du_rows(self) -> dict:
        """`du` by commit, id -> row, recomputed only when a ref moved."""
        stamp = self._stamp()
        if self._du is None or self._du[0] != stamp:
            self._du = (stamp, {r.name: r for r in self.repo.du(by="commit").rows})
        return self._du[1]

    def _laid_out(self, where: str | None) -> dict:
        """The whole history with its lanes, recomputed only when a ref (or note) moved."""
        stamp = (self._stamp(), where)
        if stamp not in self._history:
            if len(self._history) > 8:
                self._history.clear()
            self._history[stamp] = history.history(self.repo, where)
        return self._history[stamp]

    def summary(self, query: dict[str, str]) -> dict:
        """The repository: where it is, its refs by kind, how many commits."""
        laid = self._laid_out(None)
        return {"dir": str(self.repo.dir), "refs": laid["refs"], "commits": laid["total"]}

    def history(self, query: dict[str, str]) -> dict:
        """A page of the history: ?offset=&limit= (at most 5000), ?where= a `find` query. "spans" are the lanes
        that cross the page ([from_row, to_row, col, branch]): with them any page can be drawn on its own."""
        offset, limit = _int(query, "offset", 0), min(_int(query, "limit", 500), MAX_PAGE)
        laid = self._laid_out(query.get("where") or None)
        end = offset + limit
        return {"offset": offset, "total": laid["total"], "all": laid["all"], "width": laid["width"],
                "refs": laid["refs"], "commits": laid["commits"][offset:end],
                "spans": [s for s in laid["spans"] if s[0] < end and s[1] > offset]}  # lanes crossing the page

    def commit(self, query: dict[str, str]) -> dict:
        """One commit: ?rev= (any revision, default HEAD)."""
        return pages.commit_page(self.repo, query.get("rev") or "HEAD", self._du_rows())

    def diff(self, query: dict[str, str]) -> dict:
        """?a=&b=: the diff of two commits with its change map (without b: a against its parent)."""
        if not query.get("a"):
            raise UsageError("diff needs ?a=REV (and ?b=REV)")
        return pages.diff_page(self.repo, query["a"], query.get("b") or None)

    def hist(self, query: dict[str, str]) -> dict:
        """?rev=&tensor=: the value histogram of one tensor."""
        if not query.get("tensor"):
            raise UsageError("hist needs ?tensor=NAME (and ?rev=REV)")
        return pages.histogram(self.repo, query.get("rev") or "HEAD", query["tensor"])

    def metrics(self, query: dict[str, str]) -> dict:
        """?name=&by=branch|none&x=step|time|index: the curves of one metric or note field."""
        if not query.get("name"):
            raise UsageError("metrics needs ?name=METRIC")
        return metrics.series(self.repo, query["name"], by=query.get("by") or "branch", x=query.get("x") or "step")

    def metric_names(self, query: dict[str, str]) -> dict:
        """Every plottable name: metrics, note fields, params."""
        return metrics.names(self.repo)

    def storage(self, query: dict[str, str]) -> dict:
        """?by=commit|branch|tag|remote: where the bytes go."""
        return pages.storage_page(self.repo, query.get("by") or "branch")


def _int(query: dict[str, str], key: str, default: int) -> int:
    try:
        value = int(query.get(key, default))
    except ValueError:
        raise UsageError(f"?{key}= must be a whole number, not {query[key]!r}") from None
    if value < 0:
        raise UsageError(f"?{key}= must not be negative")
    return value
