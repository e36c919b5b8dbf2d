"""The HTML report from a study written by the real writers (the tuner's StudyTracking and
train.py's Tracker into a real MLflow SQLite store, a real Optuna SQLite study), real PNG/WAV files
and the data plane's own dataset report: no tag is typed by hand here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from ttsops.infra.tracking import Tag, artifact_root, embedded_tracking_uri
from ttsops.report import Sample, alignment_timeline, build_report, main, plot_curves, read_decision_files
from ttsops.smart_tuner.early_stop.detectors import Action, Reason
from ttsops.smart_tuner.early_stop.vote import Decision
from ttsops.smart_tuner.study.tracking import StudyTracking
from ttsops.train.tracking import Tracker

STUDY = "demo"


def _png(title: str) -> bytes:
    from ttsops.infra.plotting import plot_alignment

    return plot_alignment(np.eye(12, 8, dtype=np.float32), title)


GENERATIONS = [  # state, restart mode, warm-start source, plan reason, end reason, early-stop action
    ("complete", "fresh", "none", "no checkpoint yet", "trainer finished", Action.CONTINUE),
    ("pruned", "warm_start", "generation 0: /x/best_model.pt", "learning_rate changed: warm start",
     "the pruner stopped it", Action.PRUNE),
]


def _write_generation(tracking: StudyTracking, uri: str, n: int, samples_dir: Path) -> str:
    """Generation ``n`` as the tuner and train.py write it: the tuner's child run, train.py's metrics
    and free-running alignment (``samples_dir``), the tuner's objective, decision and end state."""
    state, mode, source, plan_reason, reason, action = GENERATIONS[n]
    rid = tracking.open_child(n, {"learning_rate": 1e-3 * (n + 1)}, mode=mode, source=source, reason=plan_reason,
                              attempt_of=0 if n == 1 else None)
    trainer = Tracker(uri, "ttsops-demo", rid, samples_dir.parent / "logs", samples_dir, tensorboard=False)
    sink = tracking.sink(rid, mirror=False)
    for i in range(1, 4):
        step = 10 * n + 10 * i
        trainer.log_metrics({"val_loss": 1.0 / (i + n), "attention_alignment_score": 0.2 * i}, step)
        sink.objective(2.0 / (i + n), global_step=step, index=i)
    trainer.log_metrics({"asr_wer": 0.9 - 0.25 * n}, 10 * n + 30)  # train.py's last validation of the run
    png = _png(f"gen {n}")
    trainer.log_samples(10 * n + 30, "free_running", png, png, None, 22050)
    trainer.close()
    why = Reason.IMPROVING if action is Action.CONTINUE else Reason.NEVER_ALIGNED
    tracking.log_decision(rid, Decision("trial", action, why, 0.1, 1.0, f"verdict of generation {n}", ()),
                          f"trial_{action.value}")
    tracking.finish_child(rid, state, {Tag.REASON: reason})
    return rid


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """A study written the way the tuner writes one: MLflow runs (StudyTracking, train.py's Tracker),
    Optuna trials, generation dirs, a dataset (the data plane's report)."""
    import optuna
    from mlflow import MlflowClient

    from ttsops.audio.io import save_wav
    from ttsops.data.build import dataset_report, plot_report

    root = tmp_path_factory.mktemp("report")
    work = root / "tune"
    study_dir = work / STUDY
    uri = embedded_tracking_uri(work)
    storage = f"sqlite:///{work / 'optuna.db'}"
    study_dir.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(study_name=STUDY, storage=storage)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tracking = StudyTracking(client, experiment_name="ttsops-demo", study_name=STUDY,
                             artifact_root=artifact_root(uri))
    tracking.open_parent(s, {"sampler": "tpe"})
    # generation 0's alignment in its directory, generation 1's only as an MLflow artifact
    _write_generation(tracking, uri, 0, study_dir / "generations" / "gen_0000" / "samples")
    _write_generation(tracking, uri, 1, root / "elsewhere" / "samples")
    tracking.finish_parent("FINISHED", {Tag.STOP_REASON: "n_trials (2) reached", Tag.STATUS: "finished"}, {})
    t0 = s.ask()
    s.tell(t0, 0.75)
    t1 = s.ask()
    t1.report(3.0, 1)
    s.tell(t1, state=optuna.trial.TrialState.PRUNED)

    dataset = root / "dataset"
    manifest = [{"duration": 1.5 + i / 4, "normalized": "the old man found a map", "split": "train"}
                for i in range(8)]
    rep = dataset_report(manifest, {"too_noisy": 2})
    dataset.mkdir()
    (dataset / "report.json").write_text(json.dumps(rep))
    plot_report(rep, manifest, dataset / "report.png")

    samples_dir = root / "samples"
    wav = save_wav(samples_dir / "sample_01.wav", 0.1 * np.sin(np.arange(2205) / 5).astype(np.float32), 22050)
    (samples_dir / "sample_01_alignment.png").write_bytes(_png("sample"))
    (samples_dir / "samples.json").write_text(json.dumps([{"text": "The old man <found> a map.", "wav": str(wav),
                                                          "alignment": str(samples_dir / "sample_01_alignment.png")}]))
    (study_dir / "tuner_config.yaml").write_text(yaml.safe_dump({
        "core_engine": {"study_name": STUDY, "work_dir": str(work), "storage": None},
        "monitoring": {"platforms": {"mlflow": {"tracking_uri": None}}},
        "training": {"dataset": str(dataset)}}))
    return {"root": root, "study_dir": study_dir, "uri": uri, "storage": storage, "dataset": dataset,
            "samples": samples_dir, "wav": wav}


def _rows(html: str) -> list[str]:
    table = html.split("<h2>Generations</h2>", 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr[^>]*>\s*<td.*?</tr>", table, flags=re.S)


def test_report_has_the_table_images_and_audio(study, tmp_path):
    s = study
    sample = Sample("The old man <found> a map.", s["wav"], s["samples"] / "sample_01_alignment.png",
                    asr="the old man found map")
    path = build_report(s["study_dir"], tmp_path / "r", tracking_uri=s["uri"], storage=s["storage"],
                        dataset_dir=s["dataset"], samples=[sample], facts={"stage tune": "12 s"},
                        commands={"MLflow UI": f"mlflow ui --backend-store-uri {s['uri']}"})
    html = path.read_text()
    assert path == tmp_path / "r" / "index.html"
    rows = _rows(html)
    assert len(rows) == 2
    assert "COMPLETE" in rows[0] and "0.75" in rows[0] and "fresh" in rows[0]  # Optuna's value wins
    assert ">0.9<" in rows[0] and ">0.65<" in rows[1]  # the intelligibility each generation ended with
    assert "PRUNED" in rows[1] and "warm_start" in rows[1] and "generation 0" in rows[1]
    assert "learning_rate=0.002" in rows[1] and "the pruner stopped it" in rows[1]
    assert 'class="best"' in rows[0] and 'class="best"' not in rows[1]
    imgs = re.findall(r'<img[^>]* src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    # curves + timeline (gen 0's dir) + 2 generation alignments (one from the dir, one from MLflow
    # artifacts) + dataset + sample
    assert len(imgs) == 6
    assert "generation 0, step 30" in html
    assert all(len(i) > 1000 for i in imgs)
    assert len(re.findall(r'<audio controls[^>]*src="data:audio/wav;base64,', html)) == 1
    assert "The old man &lt;found&gt; a map." in html  # escaped
    assert "the ASR heard: &ldquo;the old man found map&rdquo;" in html
    assert "verdict of generation 1" in html and "never_aligned" in html  # early-stop decision tags
    assert "n_trials (2) reached" in html
    assert "re-runs the params of generation 0" in html
    assert "too_noisy: 2" in html and "12 s" in html and "mlflow ui --backend-store-uri" in html


def test_report_cli_reads_defaults_from_the_study_dir(study, tmp_path):
    s = study
    code = main([str(s["study_dir"]), "--out", str(tmp_path / "cli"), "--samples", str(s["samples"]),
                 "--no-embed-audio"])
    assert code == 0
    html = (tmp_path / "cli" / "index.html").read_text()
    assert '<audio controls preload="none" src="assets/sample_01.wav">' in html
    assert (tmp_path / "cli" / "assets" / "sample_01.wav").read_bytes() == s["wav"].read_bytes()
    assert "report.json" in html and "too_noisy" in html  # dataset from tuner_config.yaml
    assert len(_rows(html)) == 2


def test_report_without_optuna_uses_mlflow_states(study, tmp_path):
    s = study
    html = build_report(s["study_dir"], tmp_path / "m", tracking_uri=s["uri"],
                        storage=f"sqlite:///{tmp_path / 'absent.db'}").read_text()
    rows = _rows(html)
    assert "COMPLETE" in rows[0] and "PRUNED" in rows[1]
    assert "0.75" not in rows[0] and "0.6667" in rows[0]  # objective: the child run's last value (2/3)


def test_unknown_study_is_one_clear_error(study, tmp_path):
    from ttsops.errors import DataError

    with pytest.raises(DataError, match="no MLflow parent run for study 'nope'"):
        build_report(study["study_dir"], tmp_path / "x", tracking_uri=study["uri"], study_name="nope")


def test_plot_curves_draws_without_data_and_decision_files(tmp_path):
    assert plot_curves([])[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "early_stop_decisions.jsonl").write_text(
        json.dumps({"level": "study", "action": "stop", "reason": "plateau", "message": "no gain in 3"}) + "\n")
    assert read_decision_files(tmp_path) == ["early_stop_decisions.jsonl: study stop plateau: no gain in 3"]


def test_alignment_timeline_spreads_over_global_steps(tmp_path):
    for gen, steps in ((0, [10, 20, 30, 40]), (1, [50, 60, 70, 80, 90])):
        for step in steps:
            d = tmp_path / "generations" / f"gen_{gen:04d}" / "samples" / f"step_{step:08d}"
            d.mkdir(parents=True)
            (d / "free_running_alignment.png").write_bytes(f"{gen}:{step}".encode())
    got = alignment_timeline(tmp_path, k=4)
    assert [c for c, _ in got] == ["generation 0, step 10", "generation 0, step 40",
                                   "generation 1, step 60", "generation 1, step 90"]
    assert got[-1][1] == b"1:90"
    assert len(alignment_timeline(tmp_path, k=20)) == 9


def test_preempted_generations_are_shown_apart_and_counted(tmp_path):
    """A generation whose tuner died (FAIL, re-queued) is PREEMPTED, not FAIL; its re-run (preempted
    once more in place) counts too; the summary box adds them up. Written by the tuner's own writers."""
    import optuna
    from mlflow import MlflowClient

    work = tmp_path / "tune"
    (work / STUDY).mkdir(parents=True)
    uri, storage = embedded_tracking_uri(work), f"sqlite:///{work / 'optuna.db'}"
    s = optuna.create_study(study_name=STUDY, storage=storage)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tracking = StudyTracking(client, experiment_name="p", study_name=STUDY, artifact_root=artifact_root(uri))
    tracking.open_parent(s, {})
    first = tracking.open_child(0, {"lr": 0.1}, mode="fresh", source="none", reason="no checkpoint yet")
    tracking.finish_child(first, "interrupted", {Tag.INTERRUPTED: "tuner died", Tag.PREEMPTIONS: 1,
                                                 Tag.REQUEUED: "true"})
    again = tracking.open_child(1, {"lr": 0.1}, mode="resume", source="generation 0: x", reason="resumes",
                                attempt_of=0)
    tracking.finish_child(again, "complete", {Tag.REASON: "trainer finished", Tag.PREEMPTIONS: 2})
    tracking.finish_parent("FINISHED", {Tag.STATUS: "finished"}, {})
    s.tell(s.ask(), state=optuna.trial.TrialState.FAIL)
    s.tell(s.ask(), 0.5)
    html = build_report(work / STUDY, tmp_path / "r", tracking_uri=uri, storage=storage).read_text()
    rows = _rows(html)
    assert "PREEMPTED" in rows[0] and "FAIL" not in rows[0] and "COMPLETE" in rows[1]
    assert '<td class="num">2</td>' in rows[1]
    assert re.search(r"preemptions<b>3</b>", html)
    assert "preempted 2 time(s)" in html


def test_the_alignment_panel_marks_the_studys_alignment_threshold(tmp_path):
    """attention_monitoring.alignment_threshold reaches the report (it drew a fixed 0.8 line)."""
    from ttsops.report.collect import Generation, study_defaults

    (tmp_path / "tuner_config.yaml").write_text(
        "smart_early_stopping:\n  attention_monitoring:\n    alignment_threshold: 0.6\n")
    assert study_defaults(tmp_path)["alignment_threshold"] == 0.6
    g = Generation(0, "r", "COMPLETE", 1.0, 3, "fresh", "none", "", "", {}, 1.0,
                   curves={"attention_alignment_score": [(1, 0.2), (2, 0.5), (3, 0.7)]})
    assert plot_curves([g], 0.6) != plot_curves([g], 0.8)
    assert plot_curves([g]) == plot_curves([g], 0.8)  # the config's default
