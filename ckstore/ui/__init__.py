"""`ckstore ui`: a local, read-only web view of a repository — history, metrics, commits, diffs and storage —
served from the package's own assets (no CDN) with a JSON API under /api/ that scripts can call too."""
