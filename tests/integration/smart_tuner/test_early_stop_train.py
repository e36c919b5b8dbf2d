"""A generation whose alignment never forms is pruned early by the attention detector, with the real
tuner driving the real train.py (real MLflow and Optuna SQLite stores, a real subprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from tests.helpers import TINY, read_train_state
from ttsops.config import parse_config
from ttsops.smart_tuner.early_stop.controller import EarlyStopController
from ttsops.smart_tuner.early_stop.detectors import Action, Reason
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.trainer.generation import RunnerConfig
from ttsops.smart_tuner.tuner import Tuner
from ttsops.train.adapter import Tacotron2Adapter

BUDGET = 15  # epochs the generation is allowed
DEADLINE = 3  # epochs: end of the warm-up stage = the alignment deadline
NO_ALIGNMENT_HELP = {  # the tiny model without alignment prior or guided attention: it cannot align this fast
    **TINY, "attention_prior_weight": 0.0, "guided_attention_weight": 0.0,
    "val_fraction": 0.25,  # 4 validation clips of the 16: a steadier alignment score
}


def config(tmp: Path, dataset: Path) -> dict[str, Any]:
    return {
        "core_engine": {"n_trials": 1, "study_name": "noalign", "work_dir": str(tmp / "runs"),
                        "epochs_per_generation": BUDGET},
        "optimization": {"sampler": "random", "pruner": "none", "seed": 0},
        "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 2e-3}},
        "smart_early_stopping": {"adaptive_patience": {
            "initial_patience": 2, "max_patience": 2,
            "stages": {"warmup": {"epochs": DEADLINE, "multiplier": 1.0}, "main": {"epochs": 100, "multiplier": 1.0},
                       "fine_tune": {"epochs": 50, "multiplier": 0.7}}}},
        "monitoring": {"platforms": {"mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                                                "experiment_name": "noalign"}}},
        "resources": {"mixed_precision": False, "gradient_checkpointing": False, "num_threads": 1, "device": "cpu",
                      "checkpointing": {"save_frequency_steps": 1000, "keep_n_checkpoints": 2}},
        "training": {"dataset": str(dataset), "hparams": NO_ALIGNMENT_HELP},
        "adapter": {"stop_grace_s": 60.0, "kill_grace_s": 10.0, "no_metrics_timeout_s": 300.0},
        "registry": {"model_name": "noalign", "promotion_gate": {"min_attention_alignment_score": None}},
    }


def generation_run(cfg: Any) -> tuple[Any, str]:
    """(MLflow client, run id) of the study's one generation."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.monitoring.platforms.mlflow.tracking_uri)
    exp = client.get_experiment_by_name("noalign")
    (child,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("ttsops.role") == "generation"]
    return client, child.info.run_id


def validation_rows(cfg: Any) -> list[dict[str, float]]:
    """Every validation of the study's one generation, read back from its MLflow child run."""
    client, run_id = generation_run(cfg)
    hist = {m: {h.step: h.value for h in client.get_metric_history(run_id, m)}
            for m in ("epoch", "val_loss", "attention_alignment_score")}
    return [{m: hist[m][step] for m in hist if step in hist[m]} for step in sorted(hist["epoch"])]


@pytest.mark.slow  # the real train.py for a few epochs: about a minute on an idle 2-core box
def test_generation_that_never_aligns_is_pruned_by_the_attention_detector(tmp_path, tiny_dataset):
    cfg = parse_config(config(tmp_path, tiny_dataset), "test")
    summary = Tuner(cfg, runner_cfg=RunnerConfig(poll_s=0.2, heartbeat_s=2.0), trainer=Tacotron2Adapter(cfg.adapter)).run()
    assert summary.status == "finished"

    (trial,) = _trials(cfg)
    result = trial.user_attrs[history.RESULT_ATTR]
    assert trial.state is TrialState.PRUNED, result
    # the detector's own explanation is the generation's reason (MLflow tag, alert, report)
    assert result["reason"].startswith("in-trial early stop: prune: never aligned: ")
    assert DEADLINE <= result["epochs"] <= DEADLINE + 3 < BUDGET  # stopped early, soon after the deadline

    gen_dir = tmp_path / "runs" / "noalign" / "generations" / "gen_0000"
    state = read_train_state(gen_dir)
    assert state["status"] == "stopped" and state["epoch"] < BUDGET  # SIGINT: clean stop with a checkpoint

    # replay what the tuner saw: the attention detector is the one that ended it, at the last validation
    rows = validation_rows(cfg)
    assert max(r["attention_alignment_score"] for r in rows) < 0.8
    ctl = EarlyStopController(cfg.smart_early_stopping)
    decisions = [ctl.decide_trial(rows[:t], budget=BUDGET) for t in range(1, result["epochs"] + 1)]
    assert all(not d.should_end for d in decisions[:-1])
    last = decisions[-1]
    assert (last.action, last.reason) == (Action.PRUNE, Reason.NEVER_ALIGNED)
    assert last.verdict("attention").action is Action.PRUNE

    # the decision the tuner logged saw the training-side columns its gates read: the live rows carry
    # train.py's learning_rate (and train_loss) between validations, not only the validation metrics
    logged = decision_artifact(cfg, "early_stop/trial_prune.json", tmp_path / "artifact")
    verdicts = {v["name"]: v for v in logged["verdicts"]}
    assert logged["reason"] == Reason.NEVER_ALIGNED.value
    lr = verdicts["lr_annealing"]
    assert lr["reason"] not in (Reason.MISSING_METRIC.value, Reason.INSUFFICIENT_DATA.value), lr
    assert 0 < lr["details"]["learning_rate"] <= 2e-3
    assert verdicts["training_progress"]["details"]["points"] >= 1


def decision_artifact(cfg: Any, path: str, dst: Path) -> dict[str, Any]:
    import json

    client, run_id = generation_run(cfg)
    dst.mkdir(parents=True, exist_ok=True)
    return json.loads(Path(client.download_artifacts(run_id, path, str(dst))).read_text())


def _trials(cfg: Any) -> list[Any]:
    import optuna

    from ttsops.smart_tuner.search.opt_engine import make_storage

    storage = f"sqlite:///{(Path(cfg.core_engine.work_dir) / 'optuna.db').resolve()}"
    return optuna.load_study(study_name=cfg.core_engine.study_name, storage=make_storage(storage)).get_trials()
