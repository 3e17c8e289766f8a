"""The engine: plumbing over storage (resolve, peel, manifests), snapshot, restore, compare, history, fsck."""
