"""The pure data model: canonical encoding, ids, schema checks on decode."""

import msgpack
import pytest

from ckstore.errors import CorruptObject
from ckstore.model.objects import (Commit, Inline, TensorRef, FileRecipe, Manifest, Tag, TensorEntry, decode_object,
                             encode_object, object_id)

ID = b"\x01" * 32


def _manifest():
    t = TensorEntry("w", "m.safetensors", "F32", (2, 2), 8, 16, 8, (ID, b"\x02" * 32))
    f = FileRecipe("m.safetensors", 24, ID, (Inline(b"8 bytes!"), TensorRef(0)))
    return Manifest((f,), (t,))


def test_round_trip_all_types():
    for obj in (_manifest(), Commit(ID, (ID,), "me", 1.5, "msg", 3, {"loss": 0.5}, {"lr": 1e-3}),
                Tag(ID, "v1", "me", 2.0, "release")):
        enc = encode_object(obj)
        assert decode_object(enc, object_id(enc)) == obj


def test_equal_content_equal_id_regardless_of_dict_order():
    a = Commit(ID, (), "me", 1.0, "m", None, {"a": 1, "b": 2})
    b = Commit(ID, (), "me", 1.0, "m", None, {"b": 2, "a": 1})
    assert object_id(encode_object(a)) == object_id(encode_object(b))


def test_wrong_id_is_corrupt():
    enc = encode_object(_manifest())
    with pytest.raises(CorruptObject):
        decode_object(enc, b"\0" * 32)


@pytest.mark.parametrize("body", [
    {"files": [], "tensors": [{"name": "x"}]},
    {"files": [{"path": "a", "size": 5, "hash": ID, "segments": [[0, b"abc"]]}], "tensors": []},  # sizes disagree
    {"files": [{"path": "a", "size": 3, "hash": ID, "segments": [[2, 7]]}], "tensors": []},  # tensor index out of range
    {"files": "nope", "tensors": []},
])
def test_schema_violations_are_corrupt(body):
    enc = msgpack.packb(["manifest", 1, body], use_bin_type=True)
    with pytest.raises(CorruptObject):
        decode_object(enc, object_id(enc))


def test_unknown_type_and_version_refused():
    for env in (["blob", 1, {}], ["commit", 99, {}], "x", [1, 2]):
        enc = msgpack.packb(env, use_bin_type=True)
        with pytest.raises(CorruptObject):
            decode_object(enc, object_id(enc))


def test_deeply_nested_msgpack_is_corrupt_not_crash():
    enc = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(CorruptObject):
        decode_object(enc, object_id(enc))
