"""The one atomic writer: a file is the old one or the new one, never half of either."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import pytest

from ttsops.infra.atomic import (
    atomic_copy,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def test_writes_create_parents_and_replace(tmp_path):
    target = tmp_path / "a" / "b" / "f.json"
    atomic_write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert atomic_write_bytes(target, b"\x00\x01") == target and target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temp file left behind


def test_a_failing_writer_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "best_model.pt"
    target.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["best_model.pt"]


def test_copy_of_a_missing_source_leaves_the_target(tmp_path):
    dst = tmp_path / "best_model.pt"
    dst.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "nope.pt", dst)
    assert dst.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["best_model.pt"]


def _write_forever(path: str) -> None:
    i = 0
    while True:
        atomic_write_text(path, json.dumps({"i": i, "pad": "x" * 100_000}))
        i += 1


def test_a_reader_never_sees_half_a_file_while_a_writer_is_killed(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_text(target, json.dumps({"i": -1}))
    proc = multiprocessing.get_context("fork").Process(target=_write_forever, args=(str(target),))
    proc.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            json.loads(target.read_text())  # raises on a torn write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    json.loads(target.read_text())
