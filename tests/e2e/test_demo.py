"""``ttsops demo --quick`` end to end in a subprocess (slow): synthesised recordings -> segment ->
transcribe -> build -> DVC version -> two real train.py generations under the tuner -> registry
alias -> samples -> HTML report; then a second run skips every stage. Plus the demo's pure parts
(recording assembly, ASR scoring, stage markers, the budget) in microseconds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ttsops import demo as demo_mod
from ttsops.data import recordings
from ttsops.demo import cli as demo_cli
from ttsops.errors import ConfigError
from ttsops.metrics import intelligibility

STAGES = ["synth", "segment", "transcribe", "build", "version", "tune", "registry", "samples", "evaluate", "report"]


def _demo(out: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "ttsops.cli", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout, cwd=out.parent, env=env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if shutil.which("flite") is None:
        pytest.fail("flite is not installed: run scripts/setup.sh (apt-get install flite)")
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    proc = _demo(out, timeout=780)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_every_stage_ran_and_left_its_marker(demo):
    out, proc = demo
    for i, stage in enumerate(STAGES, 1):
        assert f"{i}/{len(STAGES)}  {stage}" in proc.stdout  # the stage banner
        marker = json.loads((out / ".stages" / f"{stage}.json").read_text())
        assert marker["plan"] == "quick" and marker["seconds"] >= 0
    assert not list((out / ".stages").glob(".*.tmp"))  # atomic writes left nothing behind
    dataset = out / "dataset"
    rows = (dataset / "metadata.csv").read_text().splitlines()
    assert len(rows) >= 2 and all(len(r.split("|")) == 3 for r in rows)
    assert json.loads((out / ".stages" / "version.json").read_text())["version"]
    assert (out / "dataset.dvc").is_file()


@pytest.mark.slow
def test_registry_alias_names_the_best_generation(demo):
    from mlflow import MlflowClient

    out, proc = demo
    uri = f"sqlite:///{out / 'tune' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("ttsops-tacotron2", "champion")
    best = json.loads((out / "tune" / "demo" / "best_model.json").read_text())
    assert champion.run_id == best["run_id"] and str(champion.version) == str(best["version"])
    marker = json.loads((out / ".stages" / "registry.json").read_text())
    assert marker["version"] == str(champion.version)
    assert f"models:/ttsops-tacotron2@champion = version {champion.version}" in " ".join(proc.stdout.split())
    summary = json.loads((out / "tune" / "demo" / "summary.json").read_text())
    assert [r["trial"] for r in summary["rows"]] == [0, 1]  # two generations, as --quick asks


@pytest.mark.slow
def test_samples_are_audible_wavs_with_alignments(demo):
    out, _ = demo
    items = json.loads((out / "samples" / "samples.json").read_text())
    assert len(items) == 2
    for item in items:
        wav, sr = sf.read(item["wav"])
        assert sr == 22050 and len(wav) > sr // 10 and abs(wav).max() > 1e-3
        assert Path(item["alignment"]).read_bytes()[:4] == b"\x89PNG"
    scores = json.loads((out / "samples" / "intelligibility.json").read_text())
    for name in ("in_domain", "out_of_domain"):  # the champion spoke the held-out lists to the ASR
        assert len(scores[name]["utterances"]) == 2 and 0 <= scores[name]["wer"]
        assert scores[name]["ceiling_wer"] is not None and scores[name]["ceiling_wer"] < 0.6


@pytest.mark.slow
def test_report_shows_generations_images_and_players(demo):
    out, proc = demo
    html = (out / "report" / "index.html").read_text()
    table = html.split("<h2>Generations</h2>", 1)[1].split("</table>", 1)[0]
    assert len(re.findall(r"<tr[^>]*>\s*<td", table)) == 2
    assert len(re.findall(r'class="state-(?:COMPLETE|PRUNED|FAIL)">', table)) == 2
    assert len(re.findall(r'<audio controls[^>]*src="data:audio/wav;base64,', html)) == 2
    # learning curves + one alignment per generation + the dataset histogram + one per sample
    assert len(re.findall(r'<img[^>]* src="data:image/png;base64,', html)) >= 1 + 2 + 1 + 2
    assert "ASR word error rate" in html and "stop reason" in html and "the ASR heard" in html
    assert "held-out ASR WER, in-domain" in html and "copy-synthesis ceiling" in html
    text = " ".join(proc.stdout.split())
    for tool in ("mlflow ui --backend-store-uri sqlite:///", "tensorboard --logdir", "optuna-dashboard sqlite:///"):
        assert tool in text


@pytest.mark.slow
def test_a_second_run_skips_every_stage(demo):
    out, _ = demo
    report = out / "report" / "index.html"
    before = report.stat().st_mtime_ns
    proc = _demo(out, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("skipped") == len(STAGES)
    assert report.stat().st_mtime_ns == before


# --- pure parts (fast) ------------------------------------------------------------------------------
def test_join_utterances_places_speech_between_pauses_with_light_noise():
    sr, rng = 16000, np.random.default_rng(0)
    utts = [0.3 * np.sin(np.arange(sr) * 0.2 * (i + 1)).astype(np.float32) for i in range(4)]
    wav, spans = recordings.join_utterances(utts, rng, sr, (0.3, 2.0), snr_db=35.0)
    assert len(spans) == 4 and spans[0][0] == 0.5
    for (s0, e0), (s1, _) in zip(spans, spans[1:], strict=False):
        assert e0 - s0 == pytest.approx(1.0, abs=1e-3) and 0.3 <= s1 - e0 <= 2.0 + 1e-3
    assert spans[-1][1] <= len(wav) / sr and np.abs(wav).max() <= 0.89 + 1e-6
    noise = wav[: int(0.45 * sr)]
    speech = wav[int(spans[0][0] * sr): int(spans[0][1] * sr)]
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
    assert 30 < snr < 40  # +-2 dB utterance gain on top of 35 dB


def test_asr_quality_matches_clips_to_utterances_by_overlap():
    truth = [{"file": "r.wav", "utterances": [{"text": "The old man.", "start": 0.5, "end": 1.5},
                                              {"text": "A red kite!", "start": 2.0, "end": 3.0}]}]
    rows = [{"source": "r.wav", "start": 0.4, "end": 1.6, "normalized": "the old man"},
            {"source": "r.wav", "start": 1.9, "end": 3.1, "normalized": "a red cat"},
            {"source": "other.wav", "start": 0.0, "end": 1.0, "normalized": "nothing"}]
    q = recordings.asr_quality(rows, truth)
    assert q == {"asr_wer": pytest.approx(1 / 6, abs=1e-4), "clips_matched": 2, "clips_with_several_utterances": 0}
    merged = [{"source": "r.wav", "start": 0.4, "end": 3.1, "normalized": "the old man a red kite"}]
    assert recordings.asr_quality(merged, truth)["clips_with_several_utterances"] == 1
    assert intelligibility.word_error_rate(["The cat, sat."], [""]) == 1.0


def _demo_obj(tmp_path: Path, budget: float = 20.0) -> demo_mod.Demo:
    import io

    from rich.console import Console

    return demo_mod.Demo(tmp_path, demo_mod.QUICK, budget, 1, Path("configs/demo.yaml"),
                         Console(file=io.StringIO(), width=200))


def test_run_skips_marked_stages_and_reruns_everything_after_a_missing_one(tmp_path, monkeypatch):
    calls: list[str] = []

    def stage(name):
        return lambda d: calls.append(name) or {"n": len(calls)}

    monkeypatch.setattr(demo_cli, "STAGES", [(n, n, stage(n)) for n in ("a", "b", "c")])
    d = _demo_obj(tmp_path)
    demo_mod.run(d)
    assert calls == ["a", "b", "c"]
    assert json.loads((tmp_path / ".stages" / "b.json").read_text())["plan"] == "quick"
    demo_mod.run(_demo_obj(tmp_path))
    assert calls == ["a", "b", "c"]  # all skipped
    (tmp_path / ".stages" / "b.json").unlink()
    demo_mod.run(_demo_obj(tmp_path))
    assert calls == ["a", "b", "c", "b", "c"]  # c is stale once b ran again
    assert not list((tmp_path / ".stages").glob(".*"))  # no temp files left
    full = demo_mod.Demo(tmp_path, demo_mod.FULL, 20.0, 1, Path("x"), _demo_obj(tmp_path).console)
    with pytest.raises(ConfigError, match="holds a 'quick' demo"):
        demo_mod.run(full)


def test_tune_budget_is_what_the_data_plane_left_and_is_kept_on_resume(tmp_path):
    d = _demo_obj(tmp_path, budget=20.0)
    d.info = {"synth": {"seconds": 60}, "transcribe": {"seconds": 180}}
    assert demo_mod.tune_budget(d) == pytest.approx(20 - 4 - demo_mod.RESERVE_MIN)
    d.info["version"] = {"seconds": 600}  # a resumed session: the saved budget holds
    assert demo_mod.tune_budget(d) == pytest.approx(20 - 4 - demo_mod.RESERVE_MIN)
    late = _demo_obj(tmp_path / "late", budget=5.0)
    late.info = {"transcribe": {"seconds": 600}}
    assert demo_mod.tune_budget(late) == demo_mod.MIN_TUNE_MIN
