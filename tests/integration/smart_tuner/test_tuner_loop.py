"""The tuner loop end to end with real processes, a real Optuna SQLite study and a real MLflow store
(the foreign numpy trainer, so a generation takes about a second)."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import mlflow.artifacts
import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import read_train_state
from tests.integration.smart_tuner.fixtures.tuner_testkit import (
    foreign_adapter_dict,
    foreign_config,
    load_study,
    mlflow_client,
    real_config,
    study_runs,
    wait_for,
    write_config,
)
from ttsops.registry.model_registry import BEST_FILE
from ttsops.smart_tuner.early_stop.attention import held_alignment
from ttsops.smart_tuner.search.baseline import BASELINE_ATTR
from ttsops.smart_tuner.search.line_effect import PROPOSED_ATTR
from ttsops.smart_tuner.search.warm_line import CARRY_ON_ATTR, HEAD_ATTR, REFERENCE_ATTR, line_level
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.trainer.generation import RunnerConfig
from ttsops.smart_tuner.trainer.trainer_wrapper import LOG_FILE, read_pid_file
from ttsops.smart_tuner.tuner import Tuner
from ttsops.train.adapter import Tacotron2Adapter

FAST = RunnerConfig(poll_s=0.1, heartbeat_s=1.0)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def notify(self, event: str, **payload) -> None:
        self.events.append((event, payload))

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


def _tuner(cfg, **kw) -> Tuner:
    return Tuner(cfg, runner_cfg=FAST, trainer=Tacotron2Adapter(cfg.adapter), **kw)


def test_study_tracks_every_generation_and_keeps_the_best(tmp_path, mlflow_uri, monkeypatch):
    _, cfg = write_config(tmp_path, foreign_config(tmp_path, n_trials=4, epochs=3))
    rec = Recorder()
    summary = _tuner(cfg, notifier=rec).run()
    assert summary.status == "finished" and "n_trials" in summary.stop_reason

    study = load_study(cfg)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for t in trials:  # step = epoch within the generation, for warm-started ones too
        assert sorted(t.intermediate_values) == [1, 2, 3]
    assert [t.user_attrs[history.PLAN_ATTR]["mode"] for t in trials][0] == "fresh"
    assert all(t.user_attrs[history.PLAN_ATTR]["mode"] != "fresh" for t in trials[1:])

    parent, children = study_runs(cfg)
    assert parent.info.status == "FINISHED" and parent.data.tags["ttsops.study"] == "foreign"
    assert [int(c.data.tags["ttsops.trial"]) for c in children] == [0, 1, 2, 3]
    for c, t in zip(children, trials, strict=True):
        assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert c.info.status == "FINISHED" and c.data.tags["ttsops.state"] == "complete"
        assert float(c.data.params["tuner.lr"]) == pytest.approx(t.params["lr"])
        assert c.data.metrics["val_loss"] > 0  # mirrored from TensorBoard
        assert c.data.metrics["objective"] == pytest.approx(t.value)
        assert t.user_attrs[history.RUN_ID_ATTR] == c.info.run_id
    assert children[0].data.tags["ttsops.warm_start_source"] == "none"
    assert children[2].data.tags["ttsops.warm_start_source"].startswith("generation ")

    best = min(trials, key=lambda t: t.value)
    best_path = summary.study_dir / BEST_FILE
    assert filecmp.cmp(best_path, best.user_attrs[history.CKPT_ATTR], shallow=False)
    client = mlflow_client(cfg)
    champion = client.get_model_version_by_alias("foreign-mlp", "champion")
    assert champion.run_id == best.user_attrs[history.RUN_ID_ATTR]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # models:/ resolves through the registry URI
    got = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/foreign-mlp/{champion.version}", dst_path=str(tmp_path / "dl")
        )
    )
    assert filecmp.cmp(got / BEST_FILE, best_path, shallow=False)
    assert (
        "study_started" in rec.names() and "new_best" in rec.names() and rec.names()[-1] == "study_finished"
    )
    assert summary.stats["latencies"] and max(summary.stats["latencies"]) < 5.0


@pytest.mark.usefixtures("mlflow_uri")
def test_a_weak_generation_is_pruned_and_keeps_its_checkpoint(tmp_path):
    data = foreign_config(
        tmp_path, n_trials=2, epochs=4, pruner="hyperband", adapter=foreign_adapter_dict(epoch_seconds=0.3)
    )
    data["search_space"]["lr"]["high"] = 9.0
    _, cfg = write_config(tmp_path, data)
    (tmp_path / "runs").mkdir()
    study = optuna.create_study(study_name="foreign", storage=f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}")
    study.enqueue_trial({"lr": 0.1, "layers": 2})
    study.enqueue_trial({"lr": 8.0, "layers": 2})  # wrecks the warm-started weights at once
    _tuner(cfg).run()
    t0, t1 = load_study(cfg).get_trials()
    assert t0.state == TrialState.COMPLETE and t1.state == TrialState.PRUNED
    assert max(t1.intermediate_values) < 4
    _, children = study_runs(cfg)
    assert children[1].info.status == "KILLED" and children[1].data.tags["ttsops.state"] == "pruned"
    ckpt = Path(t1.user_attrs[history.CKPT_ATTR])
    assert ckpt.is_file() and "stopped at step" in (ckpt.parent / LOG_FILE).read_text()


@pytest.mark.usefixtures("mlflow_uri")
def test_kill_minus_nine_of_the_trainer_is_detected_and_retried(tmp_path):
    data = foreign_config(tmp_path, n_trials=1, epochs=4, adapter=foreign_adapter_dict(epoch_seconds=1.0))
    _, cfg = write_config(tmp_path, data)
    tuner = _tuner(cfg)
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("summary", tuner.run()), daemon=True)
    th.start()
    gen = tmp_path / "runs" / "foreign" / "generations" / "gen_0000"
    wait_for(lambda: (gen / "ckpt-000010.npz").exists(), 60, "the first epoch")
    os.kill(read_pid_file(gen)["pid"], signal.SIGKILL)
    th.join(120)
    assert not th.is_alive()
    (t,) = load_study(cfg).get_trials()
    assert t.state == TrialState.COMPLETE
    assert t.user_attrs[history.RESULT_ATTR]["attempts"] == 2
    log = (gen / LOG_FILE).read_text()
    assert "attempt 1" in log and "--resume-from" in log.split("attempt 1")[1]
    assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))


@pytest.mark.usefixtures("mlflow_uri")
def test_a_crash_without_retries_left_fails_the_generation_only(tmp_path, monkeypatch):
    monkeypatch.setenv("FOREIGN_CRASH_AT_EPOCH", "1")
    data = foreign_config(tmp_path, n_trials=2, epochs=2, adapter=foreign_adapter_dict(max_retries=0))
    _, cfg = write_config(tmp_path, data)
    rec = Recorder()
    _tuner(cfg, notifier=rec).run()
    states = [t.state for t in load_study(cfg).get_trials()]
    assert states == [TrialState.FAIL, TrialState.FAIL]  # each generation dir crashes once
    crashes = [p for e, p in rec.events if e == "crash"]
    assert len(crashes) == 2 and not crashes[0]["will_retry"] and "exit code 3" in crashes[0]["error"]
    assert not (tmp_path / "runs" / "foreign" / BEST_FILE).exists()


@pytest.mark.usefixtures("mlflow_uri")
def test_a_stalled_trainer_is_stopped_and_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("FOREIGN_HANG_AT_EPOCH", "1")
    adapter = foreign_adapter_dict(no_metrics_timeout_s=1.5, max_retries=1)
    _, cfg = write_config(tmp_path, foreign_config(tmp_path, n_trials=1, epochs=2, adapter=adapter))
    rec = Recorder()
    _tuner(cfg, notifier=rec).run()
    (t,) = load_study(cfg).get_trials()
    assert t.state == TrialState.FAIL  # hangs on the retry too
    assert "no new metrics" in t.user_attrs[history.RESULT_ATTR]["reason"]
    assert [e for e, _ in rec.events].count("retry") == 1


@pytest.mark.usefixtures("mlflow_uri")
def test_sigint_to_the_tuner_stops_cleanly_and_requeues(tmp_path):
    data = foreign_config(tmp_path, n_trials=2, epochs=30, adapter=foreign_adapter_dict(epoch_seconds=1.0))
    _, cfg = write_config(tmp_path, data)
    stop = threading.Event()
    tuner = _tuner(cfg, stop_event=stop)
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("s", tuner.run()), daemon=True)
    th.start()
    gen = tmp_path / "runs" / "foreign" / "generations" / "gen_0000"
    wait_for(lambda: (gen / "ckpt-000010.npz").exists(), 60, "the first checkpoint")
    stop.set()
    th.join(60)
    assert box["s"].status == "interrupted"
    trials = load_study(cfg).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].system_attrs["fixed_params"] == trials[0].params
    assert trials[1].user_attrs["retry_of"] == 0
    parent, children = study_runs(cfg)
    assert parent.info.status == "KILLED" and children[0].info.status == "KILLED"
    assert "stopped at step" in (gen / LOG_FILE).read_text()
    # the next session runs the re-queued params, then one more (shorter generations)
    _, cfg = write_config(
        tmp_path, {**data, "core_engine": {**data["core_engine"], "epochs_per_generation": 2}}
    )
    summary = _tuner(cfg).run()
    trials = load_study(cfg).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert summary.status == "finished"
    assert study_runs(cfg)[0].info.run_id == parent.info.run_id


@pytest.mark.usefixtures("mlflow_uri")
def test_wall_clock_budget_ends_the_study(tmp_path):
    data = foreign_config(
        tmp_path, n_trials=50, epochs=3, extra={"core_engine": {"wall_clock_budget_minutes": 0.05}}
    )  # 3 s
    _, cfg = write_config(tmp_path, data)
    summary = _tuner(cfg).run()
    assert "budget" in summary.stop_reason
    assert 1 <= len(summary.rows) < 50


@pytest.mark.usefixtures("mlflow_uri")
def test_a_generation_running_at_the_budget_completes_and_says_which_budget(tmp_path):
    adapter = foreign_adapter_dict(epoch_seconds=1.0)
    data = foreign_config(tmp_path, n_trials=5, epochs=30, adapter=adapter,
                          extra={"core_engine": {"wall_clock_budget_minutes": 0.1}})  # 6 s, a generation is 30
    _, cfg = write_config(tmp_path, data)
    summary = _tuner(cfg).run()
    (t,) = load_study(cfg).get_trials()
    assert t.state == TrialState.COMPLETE and len(t.intermediate_values) >= 1
    assert t.user_attrs[history.RESULT_ATTR]["reason"] == "stopped: wall-clock budget (0.1 min) spent"
    assert summary.stop_reason == "wall-clock budget (0.1 min) spent"


@pytest.mark.slow
@pytest.mark.usefixtures("mlflow_uri")
def test_real_train_py_study_with_a_killed_trainer(tmp_path, tiny_corpus):
    """Two generations of the real train.py; train.py of generation 0 gets kill -9 after its
    first epoch and is retried from its own checkpoint; generation 1 warm-starts from the best."""
    from ttsops.model.inference import Synthesizer

    _, cfg = write_config(tmp_path, real_config(tmp_path, tiny_corpus, n_trials=2, epochs=2))
    tuner = _tuner(cfg)
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("s", tuner.run()), daemon=True)
    th.start()
    gen0 = tmp_path / "runs" / "real" / "generations" / "gen_0000"
    wait_for(lambda: (read_train_state(gen0) or {}).get("epoch", 0) >= 1, 300, "generation 0's first epoch")
    os.kill(read_pid_file(gen0)["pid"], signal.SIGKILL)
    th.join(600)
    assert box["s"].status == "finished"
    t0, t1 = load_study(cfg).get_trials()
    assert t0.state == t1.state == TrialState.COMPLETE
    assert t0.params["learning_rate"] == pytest.approx(1e-3) and t0.user_attrs[BASELINE_ATTR]  # train.py's default
    curve = [v for _, v in sorted(t0.intermediate_values.items())]
    assert t1.user_attrs[REFERENCE_ATTR] == pytest.approx(line_level(curve, t0.value))  # the line it continues
    assert t0.user_attrs[history.RESULT_ATTR]["attempts"] == 2
    assert "--checkpoint_path" in (gen0 / LOG_FILE).read_text().split("attempt 1")[1]
    assert read_train_state(gen0)["epoch"] == 2  # the retry trained to the generation's total
    assert t1.user_attrs[history.PLAN_ATTR]["mode"] in ("warm_start", "resume")
    _, children = study_runs(cfg)
    for c in children:  # train.py logged into the tuner's child runs
        assert {"val_loss", "attention_alignment_score", "mcd", "objective"} <= set(c.data.metrics)
        assert c.info.status == "FINISHED"
    for t in (t0, t1):  # the study level judges where the alignment held: median of the last 5
        hist = mlflow_client(cfg).get_metric_history(t.user_attrs[history.RUN_ID_ATTR], "attention_alignment_score")
        held = held_alignment([m.value for m in sorted(hist, key=lambda m: m.step)])
        assert t.user_attrs[history.ALIGNMENT_ATTR] == pytest.approx(held)
    assert children[1].data.tags["ttsops.warm_start_source"].startswith("generation ")
    best = min((t0, t1), key=lambda t: t.value)
    best_path = tmp_path / "runs" / "real" / BEST_FILE
    assert filecmp.cmp(best_path, best.user_attrs[history.CKPT_ATTR], shallow=False)
    wav, _ = Synthesizer.from_checkpoint(best_path, device="cpu").synthesize("Hello there.")
    assert len(wav) > 0
    champion = mlflow_client(cfg).get_model_version_by_alias("real-taco", "champion")
    assert champion.run_id == best.user_attrs[history.RUN_ID_ATTR]


@pytest.mark.slow
@pytest.mark.usefixtures("mlflow_uri")
def test_a_continuation_reads_the_lines_audio_metrics_until_it_measures_them(tmp_path, tiny_corpus):
    """train.py counts the audio cadence along the line, so the second generation's first validation has no
    mcd/pesq/stoi of its own: its objective takes them from the checkpoint it continues (not the worst case)."""
    from tests.helpers import TINY
    from ttsops.smart_tuner.search.objective import objective, objective_weights

    pinned = {"learning_rate": {"type": "choice", "choices": [1e-3]},
              "encoder_embedding_dim": {"type": "choice", "choices": [32]}}
    data = real_config(tmp_path, tiny_corpus, n_trials=2, epochs=2, extra={
        "search_space": pinned, "training": {"hparams": {**TINY, "epochs": 2, "audio_metrics_every": 10}}})
    _, cfg = write_config(tmp_path, data)
    assert _tuner(cfg).run().status == "finished"
    t0, t1 = load_study(cfg).get_trials()
    assert t1.user_attrs[history.PLAN_ATTR]["mode"] in ("resume", "warm_start")
    client = mlflow_client(cfg)

    def logged(run: str, last: bool) -> dict[str, float]:  # the trainer's metrics at its first or last validation
        steps = [m.step for m in client.get_metric_history(run, "val_loss")]
        at, out = max(steps) if last else min(steps), {}
        for name in client.get_run(run).data.metrics:
            seen = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run, name) if m.step <= at)
            if seen and name not in ("objective", "tuner_epoch"):
                out[name] = seen[-1][2]
        return out

    run = t1.user_attrs[history.RUN_ID_ATTR]
    first = min(m.step for m in client.get_metric_history(run, "val_loss"))
    assert first not in {m.step for m in client.get_metric_history(run, "mcd")}  # not measured at its start
    own, weights = logged(run, last=False), objective_weights(cfg)
    line = {**t0.user_attrs[history.METRICS_ATTR], **logged(t0.user_attrs[history.RUN_ID_ATTR], last=True)}
    assert t1.intermediate_values[1] == pytest.approx(objective({**line, **own}, weights))  # the line's latest
    assert t1.intermediate_values[1] < objective(own, weights)  # without them: mcd, stoi, pesq at their worst


@pytest.mark.slow  # two tuner processes: about a minute here
@pytest.mark.usefixtures("mlflow_uri")
def test_two_tuner_workers_share_one_study(tmp_path):
    """Two ``smart_tuner.py`` processes, one config: an Optuna journal-file study (SQLite is not
    safe for parallel writers), one MLflow store, one study directory."""
    data = foreign_config(
        tmp_path,
        n_trials=6,
        epochs=3,
        adapter=foreign_adapter_dict(epoch_seconds=0.3),
        extra={"core_engine": {"storage": f"journal:{tmp_path / 'study.log'}"}},
    )
    config, cfg = write_config(tmp_path, data)
    script = Path(__file__).resolve().parents[3] / "smart_tuner.py"
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), "--config", str(config)],
            cwd=tmp_path,
            stdout=open(tmp_path / f"worker{i}.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for w in workers:
        assert w.wait(300) == 0, (tmp_path / "worker0.log").read_text()[-2000:]
    trials = load_study(cfg).get_trials()
    assert len({t.number for t in trials}) == len(trials)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert 6 <= len(trials) <= 7  # a worker checks the budget before asking: at most one over
    assert len({t.user_attrs[history.WORKER_ATTR] for t in trials}) == 2  # both did work
    assert len({t.user_attrs[history.GEN_DIR_ATTR] for t in trials}) == len(trials)
    parent, children = study_runs(cfg)  # one parent run for both workers
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len(children) == len(trials)
    best = min(trials, key=lambda t: t.value)
    assert filecmp.cmp(
        tmp_path / "runs" / "foreign" / BEST_FILE, best.user_attrs[history.CKPT_ATTR], shallow=False
    )
    champion = mlflow_client(cfg).get_model_version_by_alias("foreign-mlp", "champion")
    assert champion.run_id == best.user_attrs[history.RUN_ID_ATTR]


@pytest.mark.usefixtures("mlflow_uri")
def test_epochs_per_generation_is_capped_by_hyperband_max_resource(tmp_path):
    """core_engine.epochs_per_generation (5) "capped by hyperband.max_resource" (2): the trainer is
    launched for 2 epochs and the generation ends after 2 (the claim was not enforced)."""
    data = foreign_config(tmp_path, n_trials=1, epochs=5, pruner="hyperband",
                          adapter=foreign_adapter_dict(epoch_seconds=0.1))
    data["optimization"]["hyperband"] = {"min_resource": 1, "max_resource": 2, "reduction_factor": 2}
    _, cfg = write_config(tmp_path, data)
    assert (cfg.core_engine.epochs_per_generation, cfg.generation_epochs()) == (5, 2)
    _tuner(cfg).run()
    (t0,) = load_study(cfg).get_trials()
    assert t0.state == TrialState.COMPLETE and max(t0.intermediate_values) == 2
    assert t0.user_attrs[history.RESULT_ATTR]["epochs"] == 2


@pytest.mark.usefixtures("mlflow_uri")
def test_an_exact_resume_of_the_line_is_the_same_run_going_on(tmp_path, monkeypatch):
    """The search space pinned to one point: every continuation is an exact resume of the line's
    head. It is a carry-on (search/line_head.py): not judged by value, and the head wherever it
    ends, even rising (each process gets worse after its second epoch), so the line goes on from
    where the last one stopped instead of replaying the same hump (benchmarks/README.md, seventh run)."""
    monkeypatch.setenv("FOREIGN_WORSEN_AFTER_EPOCH", "2")
    data = foreign_config(tmp_path, n_trials=4, epochs=4)
    data["search_space"] = {"lr": {"type": "choice", "choices": [0.1]}, "layers": {"type": "choice", "choices": [1]}}
    _, cfg = write_config(tmp_path, data)
    _tuner(cfg).run()
    study = load_study(cfg)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for prev, t in zip(trials[1:], trials[2:], strict=False):
        plan = t.user_attrs[history.PLAN_ATTR]
        assert plan["mode"] == "resume" and t.user_attrs[CARRY_ON_ATTR]
        assert REFERENCE_ATTR in t.user_attrs  # for its line effect (search/line_effect.py), not to judge it
        assert plan["source"].startswith(f"generation {prev.number} (the line's head)")
    gen3 = tmp_path / "runs" / "foreign" / "generations" / "gen_0003"
    assert study.user_attrs[HEAD_ATTR]["generation"] == 3
    assert Path(study.user_attrs[HEAD_ATTR]["checkpoint"]).parent == gen3


@pytest.mark.usefixtures("mlflow_uri")
@pytest.mark.parametrize("line_patience", [2, None])
def test_a_stalled_search_ends_only_after_the_line_carried_on_as_one_run(tmp_path, monkeypatch, line_patience):
    """Every process gets worse after its first epoch and an improvement must be 50%, so no
    generation beats the first and the study-level stop (tuner_patience 2) says end after the third. With carry-ons the search's stall
    is first told apart from the line's: the head goes on as one run (its own params, an exact
    resume) for tuner_patience generations, and the study ends when those did not help either.
    Measured why (benchmarks/README.md, eighth run): a study ended at 6 of 10 CPU-minutes while one
    run of its line's point was still descending."""
    monkeypatch.setenv("FOREIGN_WORSEN_AFTER_EPOCH", "1")
    data = foreign_config(tmp_path, n_trials=12, epochs=3, sampler="random",
                          extra={"smart_early_stopping": {"tuner_patience": 2, "tuner_min_delta": 0.5}})
    data["optimization"]["line_patience"] = line_patience
    _, cfg = write_config(tmp_path, data)
    summary = _tuner(cfg).run()
    assert summary.stop_reason.startswith("early stop:")
    trials = load_study(cfg).get_trials()
    carried = [bool(t.user_attrs.get(CARRY_ON_ATTR)) for t in trials]
    if line_patience is None:  # as before: the stop acts on the search alone
        assert len(trials) == 3 and not any(carried)
        return
    assert carried == [False, False, False, True, True]  # two carry-ons, then the end
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials[carried.index(True):]:
        if t.user_attrs.get(CARRY_ON_ATTR):  # the line's own params: an exact resume of its head
            assert t.user_attrs[history.PLAN_ATTR]["mode"] == "resume"


@pytest.mark.usefixtures("mlflow_uri")
@pytest.mark.parametrize("sampler_value", ["line_effect", "objective"])
def test_the_sampler_learns_from_line_effects(tmp_path, sampler_value):
    """From the third continuation on (two line effects known) the tuner queues the shadow study's
    proposal (search/line_effect.py); with ``sampler_value: objective`` the study's sampler asks."""
    data = foreign_config(tmp_path, n_trials=5, epochs=2, extra={"optimization": {"sampler_value": sampler_value}})
    _, cfg = write_config(tmp_path, data)
    _tuner(cfg).run()
    trials = load_study(cfg).get_trials()
    proposed = [bool(t.user_attrs.get(PROPOSED_ATTR)) for t in trials]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert proposed == ([False, False, False, True, True] if sampler_value == "line_effect" else [False] * 5)
