"""Pure model pieces: revisions, history walks, paths, ref names, metadata typing."""


import pytest

from ckstore.model import graph, metadata, revisions
from ckstore.errors import InvalidMetadata, UnsafePath, UsageError
from ckstore.model.paths import check_path, check_paths
from ckstore.model.refnames import check_ref_name


def test_parse_rev():
    assert revisions.parse("main") == ("main", [])
    assert revisions.parse("main~2^") == ("main", [("~", 2), ("^", 1)])
    assert revisions.parse("v1.0^2~") == ("v1.0", [("^", 2), ("~", 1)])
    assert revisions.parse("feature/x~10") == ("feature/x", [("~", 10)])


def test_walk_and_merge_base():
    parents = {b"d": (b"b", b"c"), b"b": (b"a",), b"c": (b"a",), b"a": ()}
    times = {b"a": 1, b"b": 2, b"c": 3, b"d": 4}
    order = list(graph.walk([b"d"], parents.__getitem__, times.__getitem__))
    assert order == [b"d", b"c", b"b", b"a"]
    assert graph.merge_base(b"b", b"c", parents.__getitem__, times.__getitem__) == b"a"
    assert graph.is_ancestor(b"a", b"d", parents.__getitem__)
    assert not graph.is_ancestor(b"c", b"b", parents.__getitem__)


@pytest.mark.parametrize("bad", ["../x", "/etc/x", "a/../../b", "C:\\x", "C:x", ".ckstore/config", "a/.git/x",
                                 "a\0b", "", "a//b", "./a", "a/", "x" * 5000, ".CKSTORE/x", "a\\b"])
def test_unsafe_paths(bad):
    with pytest.raises(UnsafePath):
        check_path(bad)


def test_safe_paths_and_collisions():
    check_paths(["model.safetensors", "tokenizer/vocab.json", "a.b/c..d", "..."[:2] + "x"])
    with pytest.raises(UnsafePath, match="case"):
        check_paths(["Model.bin", "model.bin"])
    with pytest.raises(UnsafePath, match="file and a directory"):
        check_paths(["a", "a/b"])


@pytest.mark.parametrize("bad", ["", "a..b", ".hidden", "a/.x", "x.lock", "a b", "a~1", "a^", "a:b", "a//b", "a/",
                                 "/a", "a\\b", "a@{1}", "x?"])
def test_bad_ref_names(bad):
    with pytest.raises(UsageError):
        check_ref_name(bad)


def test_metadata_typing():
    parsed = metadata.parse_assignments(["params.lr=3e-4", "params.layers=12", "flag=true", "name=resnet",
                                         "data.splits=[1,2]", "nothing=null", "inf=inf"])
    assert parsed == {"params": {"lr": 3e-4, "layers": 12}, "flag": True, "name": "resnet",
                      "data": {"splits": [1, 2]}, "nothing": None, "inf": "inf"}
    sections = metadata.split_sections(parsed)
    assert sections["extra"] == {"flag": True, "name": "resnet", "nothing": None, "inf": "inf"}
    with pytest.raises(InvalidMetadata):
        metadata.parse_assignments(["novalue"])
    with pytest.raises(InvalidMetadata):
        metadata.split_sections({"metrics": {"loss": "low"}})
    with pytest.raises(InvalidMetadata):
        metadata.parse_assignments(["a=1", "a.b=2"])


def test_gc_summary_says_freed_or_still_waiting_never_a_negative_freed():
    from ckstore.results import GcResult
    freed = GcResult(dry_run=False, grace=3600.0, disk_before=3 << 30, disk_after=1 << 30).summary()
    assert "on disk 3.0 GiB -> 1.0 GiB (2.0 GiB freed)" in freed
    grown = GcResult(dry_run=False, grace=3600.0, disk_before=1 << 30, disk_after=2 << 30).summary()
    assert "(1.0 GiB more until the tombstones' grace period ends)" in grown and "-" not in grown.split("(")[-1]
