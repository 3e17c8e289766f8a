"""Local files of a repository: the object store, packs, the LMDB cache, refs and the audit log, config."""
