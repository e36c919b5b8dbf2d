"""``ttsops tune`` workers on three hosts (network namespaces, own hostnames, no shared directory)
share one study on PostgreSQL and one ``mlflow server``: one parent run, one registry line, the
champion's ``best_model.pt`` on every host through the registry, no trial run twice, a killed
worker's trial re-queued and run by another host. And the parent election under simultaneous starts.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from tests.integration.multihost.conftest import PYTHON
from tests.integration.smart_tuner.fixtures import tuner_testkit as kit
from ttsops.config import parse_config
from ttsops.infra.tracking import Tag
from ttsops.smart_tuner.study import history
from ttsops.smart_tuner.study.tracking import CANDIDATE_PREFIX, PARENT_ATTR

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

N_TRIALS = 12  # enough work left after the kill for the living hosts to see the trial go stale (3.5 s)


def _config(lab, at, name: str) -> dict:
    data = kit.foreign_config(
        at,
        n_trials=N_TRIALS,
        epochs=3,
        adapter=kit.foreign_adapter_dict(epoch_seconds=0.6, stop_grace_s=1.0, kill_grace_s=0.5),
        extra={
            "core_engine": {"storage": lab.new_database("optuna"), "heartbeat_s": 0.5, "stale_after_s": 3.0},
            "smart_early_stopping": {"enabled": False},
            "registry": {"model_name": f"mlp-{name}", "promotion_gate": {"min_attention_alignment_score": None}},
        },
    )
    data["core_engine"]["study_name"] = name
    data["monitoring"] = {"platforms": {"mlflow": {"tracking_uri": lab.mlflow, "experiment_name": name}}}
    return data


def _trials(cfg) -> list:
    try:
        return kit.load_study(cfg).get_trials()
    except KeyError:  # no worker has created the study yet
        return []


def test_three_hosts_share_one_study_and_one_champion(lab):
    from mlflow.entities import ViewType

    name = f"hosts{int(time.time()) % 100000}"
    own, at = lab.dirs(name)
    data = _config(lab, at, name)
    for d in own:  # the same config deployed on every host
        (d / "tune.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = parse_config(data, "tune.yaml")
    logs = [lab.store / name / f"worker{i}.log" for i in range(3)]
    argv = [PYTHON, "-m", "ttsops", "tune", "--config", str(at / "tune.yaml")]
    started = time.monotonic()
    workers = [lab.start(i, argv, own[i], at, logs[i]) for i in range(3)]  # all at once
    host2 = lab.net.hosts[2].hostname

    def host2_mid_generation():
        for t in _trials(cfg):
            gen = t.user_attrs.get(history.GEN_DIR_ATTR)
            if t.state == TrialState.RUNNING and str(t.user_attrs.get(history.WORKER_ATTR, "")).startswith(host2):
                local = own[2] / gen.removeprefix(str(at) + "/")  # host 2's file, as the test sees it
                if list(local.glob("ckpt-*.npz")):
                    return t.number
        return None

    killed = kit.wait_for(host2_mid_generation, 120, "host 2 to be training")
    workers[2].send_signal(signal.SIGKILL)  # the host is gone mid-generation; its trainer is orphaned
    workers[2].wait(10)
    for i in (0, 1):
        assert workers[i].wait(240) == 0, logs[i].read_text()[-3000:]
    survivors_s = time.monotonic() - started
    again = lab.start(2, argv, own[2], at, logs[2])  # host 2 back: the same command again
    assert again.wait(120) == 0, logs[2].read_text()[-3000:]

    trials = {t.number: t for t in _trials(cfg)}
    # the killed worker's trial: preempted, re-queued, run once more by a living host
    assert trials[killed].state == TrialState.FAIL
    assert trials[killed].user_attrs[history.RESULT_ATTR]["state"] == "interrupted"
    (retry,) = [t for t in trials.values() if t.user_attrs.get(history.RETRY_OF_ATTR) == killed]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[killed].params
    assert not retry.user_attrs[history.WORKER_ATTR].startswith(host2)
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) >= N_TRIALS
    assert {w.split(":")[0] for w in (t.user_attrs[history.WORKER_ATTR] for t in trials.values())} == {
        h.hostname for h in lab.net.hosts
    }

    # MLflow: one parent, one child run per trial (none run twice), the killed one KILLED
    client = kit.mlflow_client(cfg)
    parent, children = kit.study_runs(cfg)
    assert kit.load_study(cfg).user_attrs[PARENT_ATTR] == parent.info.run_id
    assert [int(r.data.tags["ttsops.trial"]) for r in children] == sorted(trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    by_trial = {int(r.data.tags["ttsops.trial"]): r for r in children}
    assert by_trial[killed].info.status == "KILLED"
    exp = client.get_experiment_by_name(name).experiment_id
    losers = client.search_runs([exp], "tags.`ttsops.role` = 'study'", run_view_type=ViewType.DELETED_ONLY)
    candidates = [k for k in kit.load_study(cfg).user_attrs if k.startswith(CANDIDATE_PREFIX)]
    assert len(candidates) == len(losers) + 1  # every candidate but the elected one was deleted

    # one registry line; its best version holds the champion and has the alias; every host has it
    best = min((t for t in trials.values() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    versions = client.search_model_versions(f"name='mlp-{name}'")
    assert {v.tags[Tag.STUDY] for v in versions} == {name}
    top = min(versions, key=lambda v: float(v.tags[Tag.OBJECTIVE]))
    assert top.run_id == best.user_attrs[history.RUN_ID_ATTR]
    assert client.get_model_version_by_alias(f"mlp-{name}", "champion").version == top.version
    (lab.store / name / "dl").mkdir()
    blob = Path(client.download_artifacts(top.run_id, "model/best_model.pt", str(lab.store / name / "dl"))).read_bytes()
    producer = best.user_attrs[history.WORKER_ATTR].split(":")[0]
    for i, d in enumerate(own):
        study_dir = d / "runs" / name
        meta = json.loads((study_dir / "best_model.json").read_text())
        assert (study_dir / "best_model.pt").read_bytes() == blob, f"host {i}: best_model.pt is not the champion"
        assert meta["generation"] == best.number
        mine = lab.net.hosts[i].hostname == producer
        assert (meta["pulled_from"] is None) == mine, f"host {i}: {meta}"
    # a generation planned on one host warm-started from another host's champion, pulled
    plans = [t.user_attrs.get(history.PLAN_ATTR) or {} for t in trials.values()]
    assert any(str(p.get("source", "")).startswith("generation ") for p in plans)

    pulls = [float(s) for log in logs for s in re.findall(r"pulled from models:/\S+ .* in ([\d.]+) s", log.read_text())]
    assert pulls, "no worker pulled the champion from the registry"
    logger.info(
        "3 hosts, %d trials: survivors done in %.1f s; %d pulls of best_model.pt, %.2f-%.2f s each; %d parent "
        "candidates", len(trials), survivors_s, len(pulls), min(pulls), max(pulls), len(candidates),
    )  # fmt: skip


ELECT = textwrap.dedent("""
    import json, sys, threading, time
    import optuna
    from mlflow import MlflowClient
    from ttsops.smart_tuner.search.opt_engine import make_storage
    from ttsops.smart_tuner.study.tracking import StudyTracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, uri, experiment, at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    storage = make_storage(url)  # hosts starting together race to create Optuna's tables: it retries
    client = MlflowClient(tracking_uri=uri)
    out = []
    for round in range(3):  # three studies, each opened by every host at the same instant
        study = optuna.create_study(study_name=f"s{round}", storage=storage, load_if_exists=True)
        tracking = StudyTracking(client, experiment_name=experiment, study_name=f"s{round}")
        threading.Event().wait(max(0.0, at + 4 * round - time.time()))
        out.append(tracking.open_parent(study, {"round": round}))
    print(json.dumps(out))
""")


def test_hosts_starting_at_the_same_instant_elect_one_parent_run(lab):
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    name = f"elect{int(time.time()) % 100000}"
    own, at = lab.dirs(name)
    storage = lab.new_database("elect")
    at_time = time.time() + 15  # every host has imported mlflow and optuna by then (2 busy cores)
    logs = [lab.store / name / f"h{i}.log" for i in range(3)]
    procs = [
        lab.start(i, [PYTHON, "-c", ELECT, storage, lab.mlflow, name, str(at_time)], own[i], at, logs[i])
        for i in range(3)
    ]
    for p, log in zip(procs, logs, strict=True):
        assert p.wait(120) == 0, log.read_text()[-3000:]
    chosen = [json.loads(log.read_text().strip().splitlines()[-1]) for log in logs]

    client = MlflowClient(tracking_uri=lab.mlflow)
    exp = client.get_experiment_by_name(name).experiment_id
    for r in range(3):
        assert len({c[r] for c in chosen}) == 1, f"study s{r}: the hosts disagree: {[c[r] for c in chosen]}"
        active = client.search_runs([exp], f"tags.`ttsops.study` = 's{r}'")
        deleted = client.search_runs([exp], f"tags.`ttsops.study` = 's{r}'", run_view_type=ViewType.DELETED_ONLY)
        assert [a.info.run_id for a in active] == [chosen[0][r]]
        study = optuna.load_study(study_name=f"s{r}", storage=storage)
        candidates = [k for k in study.user_attrs if k.startswith(CANDIDATE_PREFIX)]
        assert study.user_attrs[PARENT_ATTR] == chosen[0][r]
        assert len(deleted) == len(candidates) - 1 and len(candidates) >= 2, "the starts did not collide"
        assert active[0].data.params == {"round": str(r)}  # only the elected run got the study's params
