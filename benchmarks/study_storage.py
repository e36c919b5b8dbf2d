"""How many tuner workers one PostgreSQL study and one MLflow server hold: throughput against
the number of concurrent clients, until it stops scaling.

    .venv/bin/python benchmarks/study_storage.py [--clients 1 2 4 8] [--seconds 10] [--json out.json]

Needs PostgreSQL on 127.0.0.1:5432 with trust auth (the CI machine's); it creates two scratch
databases and drops them at the end. Two measurements, each with K client processes at once:

* **Optuna study (PostgreSQL)**: each client runs the tuner's own ``OptimizationEngine`` in a loop:
  ask, report 8 intermediate values to the Hyperband pruner, tell. A tuner generation does exactly
  this (plus heartbeats), so trials/s here is the ceiling of generations per second the study can
  take, with the pruner's reads of every other trial included.
* **MLflow server (``mlflow server`` on PostgreSQL, artifacts proxied)**: each client runs the
  tuner's ``MlflowWatcher`` on its own run (30 metrics already logged) and polls as fast as it can.
  A tuner polls every 0.5 s (``RunnerConfig.poll_s``), so polls/s / 2 is how many generations one
  server can watch at the default cadence.

The numbers are for this machine (2 cores shared by the clients, PostgreSQL and the server), so
the knee is where the box, not necessarily PostgreSQL, runs out; the script prints the CPU count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", sql], check=True,
                   capture_output=True, text=True)


@contextlib.contextmanager
def scratch_db(tag: str) -> Any:
    name = f"ttsops_bench_{tag}_{uuid.uuid4().hex[:6]}"
    psql(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- Optuna ------------------------------------------------------------------------------------
def optuna_client(storage: str, seconds: float, out: Any) -> None:
    import optuna
    from optuna.trial import TrialState

    from ttsops.config import OptimizationConfig, ParamSpec
    from ttsops.smart_tuner.search.opt_engine import OptimizationEngine

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"lr": ParamSpec(type="loguniform", low=1e-4, high=1e-2), "bs": ParamSpec(type="choice", choices=[8, 16])}
    opt = OptimizationConfig(sampler="tpe", pruner="hyperband", hyperband={"max_resource": 8})
    eng = OptimizationEngine(opt, space, storage=storage, study_name="bench", n_trials=10**6,
                             worker_id=f"{os.getpid()}")
    n, t_end = 0, time.monotonic() + seconds
    while time.monotonic() < t_end:
        trial = eng.ask()
        value, state = 1.0, TrialState.COMPLETE
        for step in range(1, 9):
            value = 1.0 / step + float(trial.params["lr"])
            if eng.report(trial, value, step):
                state = TrialState.PRUNED
                break
        eng.tell(trial, value if state == TrialState.COMPLETE else None, state)
        n += 1
    out.put(n)


def optuna_scaling(clients: list[int], seconds: float) -> list[dict[str, float]]:
    rows = []
    for k in clients:
        with scratch_db("optuna") as url:
            from ttsops.smart_tuner.search.opt_engine import make_storage

            make_storage(url)  # tables once, before the clients race
            rows.append(_run_clients(k, optuna_client, (url, seconds), seconds, "trials"))
    return rows


# --- MLflow server -------------------------------------------------------------------------------
def watcher_client(uri: str, seconds: float, out: Any) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from ttsops.smart_tuner.trainer.log_watcher import make_watcher

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bench") or client.get_experiment(client.create_experiment("bench"))
    run = client.create_run(exp.experiment_id)
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[Metric(f"m{i}", 1.0, now, s) for i in range(30) for s in range(3)])
    w = make_watcher("mlflow", generation=0, tracking_uri=uri, run_id=run.info.run_id)
    w.poll_once()
    n, t_end = 0, time.monotonic() + seconds
    while time.monotonic() < t_end:
        w.poll_once()
        n += 1
    out.put(n)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, workers: int) -> Any:
    import urllib.request

    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
           str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"mlflow server did not answer on {uri}") from None
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()


def watcher_scaling(clients: list[int], seconds: float, workers: int) -> list[dict[str, float]]:
    rows = []
    with scratch_db("mlflow") as url, tempfile.TemporaryDirectory() as tmp:
        with mlflow_server(url, Path(tmp), workers) as uri:
            for k in clients:
                rows.append(_run_clients(k, watcher_client, (uri, seconds), seconds, "polls"))
    return rows


# --- common --------------------------------------------------------------------------------------
def _run_clients(k: int, target: Any, args: tuple[Any, ...], seconds: float, unit: str) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, q)) for _ in range(k)]
    for p in procs:
        p.start()
    counts = [q.get(timeout=seconds + 180) for _ in procs]
    for p in procs:
        p.join(30)
    total = sum(counts)
    row = {"clients": k, unit: total, "per_s": total / seconds, "per_client_per_s": total / seconds / k}
    print(f"  {k} client(s): {total / seconds:8.1f} {unit}/s ({total / seconds / k:.1f} per client)", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--server-workers", type=int, default=2, help="mlflow server --workers")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        psql("SELECT 1")
    except (OSError, subprocess.CalledProcessError):
        print("PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres (start it, trust auth)")
        return 2
    print(f"CPUs: {os.cpu_count()}")
    print("Optuna study on PostgreSQL (ask + 8 reports to Hyperband + tell):")
    opt = optuna_scaling(args.clients, args.seconds)
    print(f"MLflow server on PostgreSQL ({args.server_workers} server workers), MlflowWatcher.poll_once:")
    mlf = watcher_scaling(args.clients, args.seconds, args.server_workers)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpus": os.cpu_count(), "optuna": opt, "mlflow": mlf}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
