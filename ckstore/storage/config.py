"""The repository config file: format version, hash, chunking and codec settings, metadata schema."""

from __future__ import annotations

import json

import blake3
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UnsupportedFormat
from ..fs.fileio import write_atomic

FORMAT, VERSION, HASH = "ckstore", 1, "blake3-256"
ENCRYPTED_VERSION = 2  # an encrypted repository: keyed ids, sealed frames, objects and refs (docs/design.md)
FEATURES_VERSION = 3   # a `features` list names what the repository's objects may use; encryption optional
VERSIONS = (VERSION, ENCRYPTED_VERSION, FEATURES_VERSION)
# What a version-3 repository's objects may use, each refused by a build that does not know it:
# "cdc": opaque runs cut by content (FastCDC) into chunks of recorded lengths (segment kind 3).
KNOWN_FEATURES = ("cdc",)
NEW_FEATURES = ("cdc",)  # what a repository made (or migrated) by this build uses
DEFAULT_CHUNK = 1 << 20
DEFAULT_PACK = 256 << 20
MAX_DELTA_DEPTH = 64  # the longest delta chain a reader follows


def _checksum(body: dict) -> str:
    return blake3.blake3(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def with_checksum(raw: dict) -> dict:
    """A config's raw table with its checksum recomputed (a remote's config edited by `protect --remote`)."""
    body = {k: v for k, v in raw.items() if k != "check"}
    return {**body, "check": _checksum(body)}


def check_version(raw: dict, where: str) -> None:
    """Refuse a config of a format version this ckstore does not read, or an encrypted one that does not say how
    (UnsupportedFormat)."""
    version = raw.get("version")
    if version not in VERSIONS:
        raise UnsupportedFormat(f"{where}: repository format version {version!r} is not supported (this ckstore "
                                f"reads versions {', '.join(map(str, VERSIONS))})", hint="upgrade ckstore")
    enc, features = raw.get("encryption"), raw.get("features")
    if version != FEATURES_VERSION and (version == ENCRYPTED_VERSION) != bool(enc):
        raise UnsupportedFormat(f"{where}: format version {version} " + ("needs" if enc is None else "has no place for")
                                + " an encryption table")
    if (version == FEATURES_VERSION) != (features is not None):
        raise UnsupportedFormat(f"{where}: format version {version} " + ("needs" if features is None else
                                                                         "has no place for") + " a features list")
    if features is not None:
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise UnsupportedFormat(f"{where}: features {features!r} is not a list of names")
        unknown = [f for f in features if f not in KNOWN_FEATURES]
        if unknown:
            raise UnsupportedFormat(f"{where}: repository feature {unknown[0]!r} is not one this ckstore knows "
                                    f"(it knows {', '.join(KNOWN_FEATURES)})", hint="upgrade ckstore")
    if enc and not (isinstance(enc, dict) and enc.get("cipher") == "aes-256-gcm" and enc.get("ids") == "blake3-keyed"
                    and isinstance(enc.get("key_id"), str)):
        raise UnsupportedFormat(f"{where}: encryption {enc!r} is not one this ckstore knows",
                                hint="upgrade ckstore")


@dataclass(frozen=True)
class Config:
    """A repository's settings, as its config file records them."""

    chunk_size: int = DEFAULT_CHUNK
    pack_size: int = DEFAULT_PACK
    zstd_level: int = 1
    max_delta_depth: int = 4
    schema: dict = field(default_factory=dict)
    retention: dict = field(default_factory=dict)  # {"policy": {...}, "auto": bool}; "prices": {tier: $/GiB-month}
    protect: dict = field(default_factory=dict)    # {ref pattern: {"no_delete", "ff_only", "require_checks"}}
    governance: dict = field(default_factory=dict)  # {"checks": {name: command}, "name_template": str, ...}
    encryption: dict = field(default_factory=dict)  # {"cipher", "ids", "key_id"}: set only in an encrypted one
    features: tuple[str, ...] = ()  # KNOWN_FEATURES in use: set from version 3 on

    @property
    def version(self) -> int:
        """The format version this config is written with."""
        return FEATURES_VERSION if self.features else ENCRYPTED_VERSION if self.encryption else VERSION

    def uses(self, feature: str) -> bool:
        """Whether the repository's objects may use `feature` (one of KNOWN_FEATURES)."""
        return feature in self.features

    def to_json(self) -> str:
        """The config file's text, with a checksum over its values (fsck reports a config changed behind it)."""
        body = {"format": FORMAT, "version": self.version, "hash": HASH, "chunk_size": self.chunk_size,
                "pack_size": self.pack_size,
                "codec": {"zstd_level": self.zstd_level, "max_delta_depth": self.max_delta_depth},
                "schema": self.schema}
        if self.features:
            body["features"] = list(self.features)
        for key in ("retention", "protect", "governance", "encryption"):  # absent when unset: older configs keep
            # their checksum
            if getattr(self, key):
                body[key] = getattr(self, key)
        return json.dumps({**body, "check": _checksum(body)}, indent=2) + "\n"

    @staticmethod
    def checksum_problem(path: Path) -> str | None:
        """Why the config's checksum does not vouch for its values (edited by hand, or damaged), or None (also
        for a config written before checksums were)."""
        raw = json.loads(path.read_text())
        check = raw.pop("check", None)
        if check is None or check == _checksum(raw):
            return None
        return ("its values do not match its checksum (edited by hand, or damaged): chunk_size "
                f"{raw.get('chunk_size')}, pack_size {raw.get('pack_size')}, codec {raw.get('codec')}; "
                "if the values are meant, `ckstore fsck --repair` records them")

    def save(self, path: Path, tmp_dir: Path) -> Config:
        """Write the config atomically (temp file, fsync, rename); returns what was written. Features only ever
        grow: those of the config on disk are kept, so a process that read it before an upgrade cannot undo it."""
        try:
            on_disk = json.loads(path.read_text()).get("features") or []
        except (OSError, ValueError, AttributeError):
            on_disk = []
        added = tuple(f for f in on_disk if f in KNOWN_FEATURES and f not in self.features)
        cfg = replace(self, features=self.features + added) if added else self
        write_atomic(path, cfg.to_json().encode(), tmp_dir)
        return cfg

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read and check a config; UnsupportedFormat names what is wrong."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UnsupportedFormat(f"{path} is not a readable ckstore config: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise UnsupportedFormat(f"{path} is not a ckstore config")
        check_version(raw, str(path))
        if raw.get("hash") != HASH:
            raise UnsupportedFormat(f"repository hash {raw.get('hash')!r} is not supported (this ckstore uses {HASH})")
        chunk, pack = raw.get("chunk_size", DEFAULT_CHUNK), raw.get("pack_size", DEFAULT_PACK)
        codec = raw.get("codec") or {}
        level, depth = codec.get("zstd_level", 1), codec.get("max_delta_depth", 4)
        if not all(isinstance(v, int) and v > 0 for v in (chunk, pack, level)) or chunk < 4096 or \
                not isinstance(depth, int) or not 0 <= depth <= MAX_DELTA_DEPTH:
            raise UnsupportedFormat(f"{path}: chunk_size, pack_size and codec.zstd_level must be positive integers "
                                    f"(chunk_size at least 4096), codec.max_delta_depth an integer from 0 to "
                                    f"{MAX_DELTA_DEPTH} (readers refuse longer delta chains)")
        tables = {key: raw.get(key) or {} for key in ("retention", "protect", "governance", "encryption")}
        for key, value in tables.items():
            if not isinstance(value, dict):
                raise UnsupportedFormat(f"{path}: {key} must be a table")
        return cls(chunk, pack, level, depth, raw.get("schema") or {}, **tables,
                   features=tuple(raw.get("features") or ()))
