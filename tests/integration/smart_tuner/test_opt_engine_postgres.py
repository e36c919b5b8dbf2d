"""Several tuner workers (real processes) share one study; the SQLite default resumes.

Parallel workers run on PostgreSQL (skipped with a reason when it is not running) and on Optuna's
JournalFileBackend (always). SQLite is the one-worker default: only resume is tested on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from optuna.trial import TrialState

from tests.helpers import fresh_postgres_database
from ttsops.config import OptimizationConfig, ParamSpec
from ttsops.smart_tuner.search.opt_engine import OptimizationEngine

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_SKIP = (
    "PostgreSQL not reachable at 127.0.0.1:5432 (start it, e.g. `service postgresql start`, "
    "trust auth, database 'test') to run the shared-study test on PostgreSQL"
)
N_PER_WORKER = 6

WORKER = textwrap.dedent("""
    import json, math, sys, time
    import optuna
    from optuna.trial import TrialState
    from ttsops.config import OptimizationConfig, ParamSpec
    from ttsops.smart_tuner.search.opt_engine import OptimizationEngine

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name, n, worker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cfg = OptimizationConfig(sampler="bohb", tpe={"n_startup_trials": 3},
                             hyperband={"min_resource": 1, "max_resource": 4, "reduction_factor": 2},
                             seed=0)  # one config for every worker, as on real hosts
    space = {"x": ParamSpec(type="uniform", low=-2, high=2),
             "c": ParamSpec(type="choice", choices=[None, 1, 2])}
    eng = OptimizationEngine(cfg, space, storage=storage, study_name=name, n_trials=2 * n,
                             worker_id=worker)
    got = []
    for _ in range(n):
        t = eng.ask()
        got.append(t.number)
        state, v = TrialState.COMPLETE, math.nan
        for epoch in range(1, 5):
            time.sleep(0.02)  # "training": lets the other worker interleave
            v = (t.params["x"] - 0.5) ** 2 + (0.0 if t.params["c"] is None else 0.3) + 1.0 / epoch
            eng.heartbeat(t)
            if eng.report(t, v, epoch):
                state = TrialState.PRUNED
                break
        eng.tell(t, v, state)
    print(json.dumps(got))
""")


def run_two_workers(storage: str, name: str) -> list[list[int]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, storage, name, str(N_PER_WORKER), f"host{i}:1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def check_shared_study(storage: str, name: str, per_worker: list[list[int]]) -> None:
    a, b = per_worker
    assert len(a) == len(b) == N_PER_WORKER
    assert not set(a) & set(b), f"both workers got trial numbers {set(a) & set(b)}"
    eng = OptimizationEngine(
        OptimizationConfig(sampler="random", pruner="none"),
        {"x": ParamSpec(type="uniform", low=-2, high=2), "c": ParamSpec(type="choice", choices=[None, 1, 2])},
        storage=storage,
        study_name=name,
    )
    trials = eng.study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(2 * N_PER_WORKER)) == sorted(a + b)
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # host:pid of each worker process
    xs = [t.params["x"] for t in trials]
    assert len(set(xs)) == len(xs), "workers sampled identical points (shared seed not salted)"
    assert eng.stale_running_trials(0.0) == []


def test_two_workers_share_a_journal_study(tmp_path):
    storage = f"journal:{tmp_path / 'study.log'}"
    check_shared_study(storage, "shared", run_two_workers(storage, "shared"))


@pytest.fixture
def pg_url():
    with fresh_postgres_database("ttsops_optuna", "the shared-study test on PostgreSQL") as url:
        yield url


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_share_a_postgresql_study(pg_url):
    check_shared_study(pg_url, "shared", run_two_workers(pg_url, "shared"))


@pytest.mark.slow
@pytest.mark.postgres
def test_stale_trial_of_a_killed_worker_is_recovered_once_on_postgresql(pg_url):
    space = {"x": ParamSpec(type="uniform", low=-2, high=2)}
    clock = [1000.0]

    def mk() -> OptimizationEngine:
        return OptimizationEngine(
            OptimizationConfig(pruner="none"),
            space,
            storage=pg_url,
            study_name="stale",
            clock=lambda: clock[0],
        )

    dead_worker, w1, w2 = mk(), mk(), mk()
    lost = dead_worker.ask()  # its process "dies": no more heartbeats
    clock[0] += 600
    assert sorted(w1.recover_stale(300) + w2.recover_stale(300)) == [lost.number]
    retry = w2.ask()
    assert retry.params == lost.params and len(w1.study.get_trials()) == 2


def test_sqlite_default_storage_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cfg = OptimizationConfig(sampler="tpe", pruner="hyperband", tpe={"n_startup_trials": 2})
    space = {"x": ParamSpec(type="uniform", low=-2, high=2)}
    first = OptimizationEngine(cfg, space, storage=storage, study_name="s", n_trials=10)
    for v in (3.0, 1.0):
        t = first.ask()
        first.report(t, v, 1)
        first.tell(t, v, TrialState.COMPLETE)
    running = first.ask()
    again = OptimizationEngine(cfg, space, storage=storage, study_name="s", n_trials=10)
    assert again.best().value == 1.0 and again.n_brackets == first.n_brackets
    assert [t.number for t in again.study.get_trials(states=(TrialState.RUNNING,))] == [running.number]
    assert again.ask().number == 3
