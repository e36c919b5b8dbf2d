"""End to end: long raw recordings -> ttsops data segment/transcribe/build/version -> train.py
trains on the dataset unchanged and records its DVC version in MLflow."""

from __future__ import annotations

import json

import jiwer
import pytest

from tests.helpers import TINY_HPARAMS, run_train
from tests.integration.data.data_helpers import make_long_recording
from ttsops.cli import main as ttsops_main
from ttsops.data.corpus import generate_sentences
from ttsops.data.manifest import read_jsonl
from ttsops.text.cleaners import english_cleaners


@pytest.mark.slow
def test_raw_recordings_become_a_versioned_dataset_that_train_py_trains_on(tmp_path, synth_cache, capsys):
    raw, seg, ds = tmp_path / "raw", tmp_path / "seg", tmp_path / "data" / "ds"
    sentences = generate_sentences(24, seed=777)
    for k in range(2):
        make_long_recording(raw / f"session{k}.wav", sentences[k * 12 : (k + 1) * 12], synth_cache, seed=k,
                            snr_db=45.0, voices=[("flite", "rms")])  # fmt: skip
    quiet = ["--workers", "2", "--no-progress"]
    assert ttsops_main(["data", "segment", str(raw), str(seg), *quiet]) == 0
    assert ttsops_main(["data", "transcribe", str(seg), *quiet]) == 0
    assert ttsops_main(["data", "build", str(seg), str(ds), "--val-fraction", "0.15", *quiet]) == 0
    manifest = read_jsonl(ds / "manifest.jsonl")
    assert len(manifest) >= 22  # 24 utterances, a low-confidence one or two may drop out
    truth = {f"session{k}_{i + 1:04d}": sentences[k * 12 + i] for k in range(2) for i in range(12)}
    refs = [
        " ".join(english_cleaners(truth[m["id"]]).replace(",", " ").replace(".", " ").split())
        for m in manifest
    ]
    hyps = [m["normalized"] for m in manifest]
    assert jiwer.wer(refs, hyps) <= 0.25
    report = json.loads((ds / "report.json").read_text())
    assert report["clips"] == len(manifest) and report["splits"]["val"] >= 3

    capsys.readouterr()
    assert ttsops_main(["data", "version", str(ds), "--remote", str(tmp_path / "remote")]) == 0
    version = capsys.readouterr().out.strip().splitlines()[-1]
    out = tmp_path / "run"
    proc = run_train("-o", str(out), "--dataset", str(ds), "resources.num_threads=1",
                     "--hparams", TINY_HPARAMS + ",epochs=1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    state = json.loads((out / "train_state.json").read_text())
    assert state["status"] == "finished"
    run = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}").get_run(state["mlflow_run_id"])
    assert run.data.tags["dataset_version"] == version
