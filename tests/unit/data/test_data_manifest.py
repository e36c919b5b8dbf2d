"""JSON lines, keys, part files and the process-pool map shared by the data steps."""

from __future__ import annotations

import json

import pytest

from ttsops.data.manifest import (
    PartStore,
    config_hash,
    count_reasons,
    discover_sources,
    parallel_map,
    read_jsonl,
    safe_key,
    write_jsonl,
)
from ttsops.errors import DataError


def _square(x: int) -> int:
    return x * x


def test_jsonl_round_trip_skips_a_torn_last_line(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "n": 1}, {"id": "b", "n": 2}])
    with path.open("a") as f:
        f.write('{"id": "c", "n"')  # a crash mid-append
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize(
    ("rel", "key"),
    [("a.wav", "a"), ("sub/dir/take 1.flac", "sub__dir__take_1"), ("x|y.wav", "x_y"), (".wav", "wav")],
)
def test_safe_key(rel, key):
    assert safe_key(rel) == key


def test_discover_sources_sorts_skips_hidden_and_dedupes_keys(tmp_path):
    for name in ["b.wav", "a.flac", "a.ogg", ".hidden.wav", "sub/c.wav", ".git/x.wav"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = discover_sources([tmp_path])
    assert [(name, key) for _, name, key in found] == [
        ("a.flac", "a"), ("a.ogg", "a_2"), ("b.wav", "b"), ("sub/c.wav", "sub__c"),
    ]  # fmt: skip
    with pytest.raises(DataError, match="nope"):
        discover_sources([tmp_path / "nope"])


def test_part_store_is_current_only_with_the_same_stamp_and_its_files(tmp_path):
    store = PartStore(tmp_path / "parts", tmp_path)
    stamp = {"fingerprint": "1:2", "config": "abc"}
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "k_0001.wav").write_bytes(b"x")
    store.write(
        "k", stamp, [{"kept": True, "path": "clips/k_0001.wav"}, {"kept": False, "reason": "too_short"}]
    )
    assert store.is_current("k", stamp)
    assert not store.is_current("k", {**stamp, "config": "other"})
    assert not store.is_current("other", stamp)
    (tmp_path / "clips" / "k_0001.wav").unlink()
    assert not store.is_current("k", stamp)
    assert count_reasons(store.records("k")) == {"too_short": 1}
    (tmp_path / "parts" / "k.json").write_text("{torn")
    assert not store.is_current("k", stamp) and store.records("k") == []


def test_config_hash_is_stable_and_sensitive():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_yields_every_item_once(workers):
    got = dict(parallel_map(_square, list(range(7)), workers=workers))
    assert got == {i: i * i for i in range(7)}


def test_write_jsonl_is_sorted_keys_one_record_per_line(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"b": 1, "a": "é"}])
    assert path.read_text(encoding="utf-8") == json.dumps({"a": "é", "b": 1}, ensure_ascii=False) + "\n"
