"""``ttsops data``: subcommand wiring, synth-corpus dispatch, one-line errors."""

from __future__ import annotations

import shutil

import pytest

from ttsops.cli import main as ttsops_main
from ttsops.data.cli import build_parser
from ttsops.data.cli import main as data_main


def test_parser_knows_every_subcommand():
    ap = build_parser()
    args = ap.parse_args(["segment", "a.wav", "dir/", "out", "--max-clip-s", "8", "--workers", "1"])
    assert (args.inputs, args.out_dir, args.max_clip_s, args.workers) == (["a.wav", "dir/"], "out", 8.0, 1)
    assert (args.min_piece_s, args.word_check) == (None, None)  # the config's defaults apply
    args = ap.parse_args(["segment", "a.wav", "out", "--min-piece-s", "3", "--no-word-check"])
    assert (args.min_piece_s, args.word_check) == (3.0, False)
    assert ap.parse_args(["checkout", "abc123", "ds"]).version == "abc123"
    with pytest.raises(SystemExit):
        ap.parse_args(["transcribe", "d", "--backend", "vosk"])


def test_synth_corpus_is_dispatched_to_the_corpus_module(tmp_path):
    if shutil.which("flite") is None:
        pytest.fail("flite is not installed: apt-get install flite")
    assert data_main(["synth-corpus", str(tmp_path / "c"), "--n", "2", "--workers", "1"]) == 0
    assert len((tmp_path / "c" / "metadata.csv").read_text().splitlines()) == 2


def test_bad_settings_give_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert (
        ttsops_main(["data", "segment", str(tmp_path / "raw"), str(tmp_path / "o"), "--min-clip-s", "20"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("ttsops: error: SegmenterConfig") and "min_clip_s" in err and "\n" not in err
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(b"")
    assert ttsops_main(["data", "transcribe", str(tmp_path / "clips"), "--backend", "faster-whisper"]) == 2
    assert "--model-dir" in capsys.readouterr().err
    assert ttsops_main(["data", "build", str(tmp_path / "clips"), str(tmp_path / "ds")]) == 2
    assert "transcribe" in capsys.readouterr().err


def test_segment_of_a_missing_input_is_a_data_error(tmp_path, capsys):
    assert ttsops_main(["data", "segment", str(tmp_path / "nope"), str(tmp_path / "o"), "--no-progress"]) == 2
    assert "input not found" in capsys.readouterr().err
