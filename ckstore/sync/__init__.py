"""Sync: move history between a repository and a remote transport.

    session     one sync's checked view of a remote (retries, verified reads, byte counts)
    select      which commits and chunks move
    push        upload branches and tags; refs move by compare-and-swap
    fetch       download new history; refs/remotes/<name>/* move
    pull        fetch, then fast-forward a branch; clone a new repository
    on_demand   the engine's ChunkSource for partial clones
"""
