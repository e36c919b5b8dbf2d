"""train.py as users and the tuner run it: real subprocesses, real MLflow SQLite, real TensorBoard."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, TINY_HPARAMS, run_train, train_cmd

METRICS = ["train_loss", "val_loss", "mel_loss", "gate_loss", "attention_alignment_score", "attention_entropy",
           "mcd", "pesq", "stoi", "grad_norm", "learning_rate"]


def common(tiny_dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["-o", str(out), "--dataset", str(tiny_dataset), "resources.num_threads=1", *extra]


def metric_history(out: Path, name: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    state = json.loads((out / "train_state.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    return {m.step: m.value for m in client.get_metric_history(state["mlflow_run_id"], name)}


@pytest.mark.slow
def test_every_metric_reaches_mlflow_tensorboard_and_wandb(tiny_dataset, tmp_path) -> None:
    """As the tuner runs it: into a child run it made (tagged with its study and trial), so W&B groups the
    generation under its study; W&B gets the alignment images and audio TensorBoard gets."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ttsops.infra.tracking import Tag

    out = tmp_path / "run"
    out.mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    child = client.create_run(client.create_experiment("study-exp"),
                              tags={Tag.STUDY: "wbstudy", Tag.TRIAL: "7"}).info.run_id
    proc = run_train(*common(tiny_dataset, out, "--hparams", TINY_HPARAMS + ",epochs=1", "--run_id", child,
                             "monitoring.platforms.wandb.enabled=true"), env={"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-2000:]

    state = json.loads((out / "train_state.json").read_text())
    assert state["status"] == "finished"
    run = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}").get_run(state["mlflow_run_id"])
    assert set(METRICS) <= set(run.data.metrics), set(METRICS) - set(run.data.metrics)
    assert run.data.params["encoder_embedding_dim"] == "32"
    # what the start cost, phase by phase (benchmarks/tuner_overhead.py reads these)
    phases = {k: v for k, v in run.data.metrics.items() if k.startswith("startup_") and k != "startup_s"}
    assert set(phases) == {f"startup_{p}_s" for p in
                           ("imports", "config", "model", "checkpoint", "data", "tracking", "first_step")}
    assert phases["startup_imports_s"] > 0.1 and all(v >= 0 for v in phases.values())
    assert run.data.metrics["startup_s"] == pytest.approx(sum(phases.values()))
    assert len(run.data.tags["dataset_fingerprint"]) == 16 and "git_commit" in run.data.tags
    acc = EventAccumulator(str(out / "logs"), size_guidance={"images": 0, "audio": 0}).Reload()
    assert set(METRICS) <= set(acc.Tags()["scalars"])
    assert any(t.startswith("alignment/") for t in acc.Tags()["images"])
    assert any(t.startswith("audio/") for t in acc.Tags()["audio"])
    offline = list((out / "wandb").glob(f"offline-run-*-{state['mlflow_run_id']}"))
    assert offline and list(offline[0].glob("*.wandb")), list((out / "wandb").iterdir())
    media = offline[0] / "files" / "media"
    for kind in ("alignment", "mel"):
        names = {p.name.rsplit("_", 2)[0] for p in (media / "images" / kind).glob("*.png")}  # NAME_STEP_HASH.png
        assert names == {"teacher_forced", "free_running"}, names
    assert list((media / "audio").rglob("*.wav"))
    record = next(offline[0].glob("*.wandb")).read_bytes()  # the run record names its group and job type
    assert b"wbstudy/gen 7" in record and b"wbstudy" in record and b"generation" in record


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_leaves_a_loadable_checkpoint_and_exits_zero(tiny_dataset, tmp_path, sig) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(*common(tiny_dataset, out, "--hparams", TINY_HPARAMS + ",epochs=500")),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    state_file = out / "train_state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (state_file.exists() and json.loads(state_file.read_text())["step"] >= 2):
        time.sleep(0.2)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-2000:]
    state = json.loads(state_file.read_text())
    assert state["status"] == "stopped" and state["stop_signal"] == sig.name  # how the tuner tells a preemption
    ckpt = torch.load(state["last_checkpoint"], weights_only=False)
    assert ckpt["step"] == state["step"] >= 2 and "optimizer" in ckpt and "rng" in ckpt
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_phonemes_frame_dropout_and_the_intelligibility_of_the_last_validation(tiny_dataset, tmp_path) -> None:
    out = tmp_path / "run"
    hp = TINY_HPARAMS + (",epochs=2,text_frontend=phonemes,drop_frame_rate=0.5,intelligibility_every=0,"
                         "intelligibility_sentences=2,audio_metrics_every=2")
    proc = run_train(*common(tiny_dataset, out, "--hparams", hp))
    assert proc.returncode == 0, proc.stderr[-2000:]
    wer, fr, cpu = (metric_history(out, m) for m in ("asr_wer", "free_running_distance", "cpu_minutes"))
    assert list(wer) == [max(fr)], "the ASR runs at the last validation only"
    assert len(fr) == 2 and 0.0 <= wer[max(fr)] <= 2.0
    assert 0 < cpu[min(cpu)] < cpu[max(cpu)]
    assert set(metric_history(out, "pesq")) == set(fr)  # the first and the last validation have audio metrics
    from ttsops.model.inference import Synthesizer

    synth = Synthesizer.from_checkpoint(out / "checkpoint_best.pt")
    assert synth.frontend.name == "phonemes" and synth.model.decoder.mean_frame.abs().sum() > 0
    wav, sr, _ = synth.speak("The birch canoe.")
    assert sr == 22050 and len(wav) > 0


@pytest.mark.slow
def test_resume_continues_the_same_curve(tiny_dataset, tmp_path) -> None:
    hp = TINY_HPARAMS + ",epochs=3"
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_train(*common(tiny_dataset, full, "--hparams", hp, "--max_steps", "6")).returncode == 0
    assert run_train(*common(tiny_dataset, part, "--hparams", hp, "--max_steps", "3")).returncode == 0
    ckpt = json.loads((part / "train_state.json").read_text())["last_checkpoint"]
    proc = run_train(*common(tiny_dataset, part, "--hparams", hp, "--max_steps", "6", "-c", ckpt))
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = metric_history(full, "train_loss"), metric_history(part, "train_loss")
    assert sorted(b) == [1, 2, 3, 4, 5, 6]  # the same MLflow run, its step count continued
    assert a == b  # bit for bit: the resumed process restored every generator and the position in the epoch
    assert metric_history(full, "val_loss") == metric_history(part, "val_loss")
    from mlflow.tracking import MlflowClient

    state = json.loads((part / "train_state.json").read_text())
    tags = MlflowClient(tracking_uri=f"sqlite:///{part / 'mlflow.db'}").get_run(state["mlflow_run_id"]).data.tags
    assert tags["restart_mode"] == "fresh" and tags["resumed_with"] == ""  # how the run started is kept
    assert tags["train_status"] == "stopped" and tags["final_step"] == "6"


@pytest.mark.slow
def test_a_warm_start_continues_the_global_epoch_in_the_early_stop_controllers_view(tiny_dataset, tmp_path) -> None:
    """Curriculum stages and the alignment deadline count global epochs: a warm-started generation's first
    epoch is its parent's last + 1 where the EarlyStopController looks (it restarted at 1 before)."""
    from ttsops.smart_tuner.early_stop.controller import EarlyStopController

    parent, child = tmp_path / "parent", tmp_path / "child"
    assert run_train(*common(tiny_dataset, parent, "--hparams", TINY_HPARAMS + ",epochs=2")).returncode == 0
    ckpt = json.loads((parent / "train_state.json").read_text())["last_checkpoint"]
    proc = run_train(*common(tiny_dataset, child, "--hparams", TINY_HPARAMS + ",epochs=1,learning_rate=5e-4",
                             "-c", ckpt, "--warm_start"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "optimizer moments carried" in proc.stderr  # every tensor fits: Adam goes on, at the new rate
    off = run_train(*common(tiny_dataset, tmp_path / "off", "--hparams", TINY_HPARAMS + ",warm_start_optimizer=false",
                            "--max_steps", "1", "-c", ckpt, "--warm_start"))
    assert off.returncode == 0 and "fresh optimizer" in off.stderr, off.stderr[-2000:]
    last = max(metric_history(parent, "global_epoch").values())
    assert last == 2.0 == max(metric_history(parent, "epoch").values())
    names = ("epoch", "global_epoch", "val_loss", "attention_alignment_score")
    hist = {m: metric_history(child, m) for m in names}
    rows = [{m: hist[m][s] for m in names} for s in sorted(hist["epoch"])]
    assert [r["epoch"] for r in rows] == [1.0]  # this process's own count (the tuner's resource)
    d = EarlyStopController().decide_trial(rows)
    attention = d.verdict("attention")
    assert attention is not None and attention.details["epoch"] == last + 1
    assert json.loads((child / "train_state.json").read_text())["global_epoch"] == last + 1
    from mlflow.tracking import MlflowClient

    def data_order(out: Path) -> str:
        run = json.loads((out / "train_state.json").read_text())["mlflow_run_id"]
        return MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}").get_run(run).data.tags["data_order"]

    # the continuation's own batch order, not its parent's first epochs again (reproducibility.py)
    assert "seed=1234," in data_order(parent) and "seed=3234," in data_order(child)


@pytest.mark.slow
def test_the_audio_cadence_counts_the_lines_validations_not_the_processes(tiny_dataset, tmp_path) -> None:
    """A continuation (exact resume, or a warm start whose tensors all fit) goes on counting its source's
    validations: no complete validation at its start (the tuner reads the checkpoint's audio metrics until
    the cadence comes round); a warm start that skipped tensors is a new line whose first one is complete."""
    hp = TINY_HPARAMS + ",audio_metrics_every=4"

    def audio_at(out: Path) -> list[int]:  # which of the run's validations (1-based) had mcd/pesq/stoi
        steps, pesq = sorted(metric_history(out, "val_loss")), metric_history(out, "pesq")
        return [i + 1 for i, s in enumerate(steps) if s in pesq]

    parent = tmp_path / "parent"
    assert run_train(*common(tiny_dataset, parent, "--hparams", hp + ",epochs=2")).returncode == 0
    assert audio_at(parent) == [1, 2]  # the line's first, the run's last
    ckpt = json.loads((parent / "train_state.json").read_text())["last_checkpoint"]
    assert torch.load(ckpt, weights_only=False)["validations"] == 2
    runs = {"warm": (hp + ",epochs=3,learning_rate=5e-4", "--warm_start"),  # the line's 3rd, 4th, 5th
            "resume": (hp + ",epochs=4", None),  # the same run's 3rd and 4th
            "new_line": (hp + ",epochs=3,encoder_embedding_dim=48", "--warm_start")}
    for name, (hparams, flag) in runs.items():
        proc = run_train(*common(tiny_dataset, tmp_path / name, "--hparams", hparams, "-c", ckpt,
                                 *([flag] if flag else [])))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert audio_at(tmp_path / "warm") == [2, 3]  # the line's 4th and the run's last, not its first
    resumed = sorted(s for s in metric_history(tmp_path / "resume", "val_loss") if s > 0)[-2:]
    assert [s in metric_history(tmp_path / "resume", "pesq") for s in resumed] == [False, True]
    assert audio_at(tmp_path / "new_line") == [1, 3]


@pytest.mark.slow
def test_warm_start_after_architecture_change_names_skipped_tensors(tiny_dataset, tmp_path) -> None:
    first = tmp_path / "a"
    assert run_train(*common(tiny_dataset, first, "--hparams", TINY_HPARAMS, "--max_steps", "2")).returncode == 0
    ckpt = json.loads((first / "train_state.json").read_text())["last_checkpoint"]
    proc = run_train(*common(tiny_dataset, tmp_path / "b", "--hparams",
                             TINY_HPARAMS + ",encoder_embedding_dim=48", "--max_steps", "3", "-c", ckpt,
                             "--warm_start"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warm start from" in proc.stderr and "fresh optimizer" in proc.stderr  # Adam's moments no longer fit
    from mlflow.tracking import MlflowClient

    b = json.loads((tmp_path / "b" / "train_state.json").read_text())
    tags = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}").get_run(b["mlflow_run_id"]).data.tags
    skipped = tags["warm_start_skipped"].split("; ")
    from ttsops.text.symbols import SYMBOLS

    n = len(SYMBOLS)
    from ttsops.train.reproducibility import weights_digest

    a = json.loads((first / "train_state.json").read_text())
    assert (tags["restart_mode"], tags["source_run_id"], tags["source_step"]) == ("warm_start", a["mlflow_run_id"], "2")
    assert tags["source_weights_sha256"] == weights_digest(torch.load(ckpt, weights_only=False)["model"])
    assert f"embedding.weight ({n}, 32)->({n}, 48)" in skipped, skipped
    assert not any(name.startswith("decoder.prenet.") for name in skipped)  # unchanged shapes were loaded
    state = torch.load(tmp_path / "b" / "checkpoint_00000003.pt", weights_only=False)
    assert state["hparams"]["encoder_embedding_dim"] == 48
    # tensors whose shape did not change were loaded: the postnet's last conv is untouched by the change
    old = torch.load(ckpt, weights_only=False)["model"]
    assert old["decoder.prenet.layers.0.weight"].shape == state["model"]["decoder.prenet.layers.0.weight"].shape


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--hparams", "batch_sise=3"], "unknown hparam 'batch_sise'"),
        (["--hparams", "batch_size=x"], "hparam batch_size='x': expected int"),
        (["--dataset", "/nonexistent/ds"], "dataset directory not found: /nonexistent/ds"),
        (["optimization.samplr=tpe"], "optimization.samplr: unknown key"),
    ],
)
def test_bad_input_fails_in_one_line_before_training(tiny_dataset, tmp_path, args, fragment) -> None:
    base = ["-o", str(tmp_path / "o"), "--dataset", str(tiny_dataset)]
    if args[0] == "--dataset":
        base = ["-o", str(tmp_path / "o")]
    proc = run_train(*base, *args, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"ttsops: error: {lines[0].split('error: ', 1)[1]}"] and fragment in lines[0]
    assert not (tmp_path / "o" / "train_state.json").exists()


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "ttsops.train", *args]


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 1])  # a group of one takes the same DDP paths (NCCL on a one-GPU box)
def test_ddp_gloo_processes_keep_identical_weights(tiny_dataset, tmp_path, nproc) -> None:
    out = tmp_path / "ddp"
    cmd = torchrun(nproc, *common(tiny_dataset, out, "--hparams", TINY_HPARAMS, "--max_steps", "2"))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = " ".join(proc.stderr.split())
    assert f"weights identical on all {nproc} ranks" in log and f"DDP rank 0 of {nproc} over gloo" in log
    assert json.loads((out / "train_state.json").read_text())["step"] == 2


@pytest.mark.slow
def test_ddp_a_signal_seen_by_one_rank_stops_both_at_the_same_step(tiny_dataset, tmp_path) -> None:
    """Ranks must agree to stop: if rank 1 alone leaves the loop, rank 0 waits in its next all-reduce
    forever (here: until the timeout below fails the test)."""
    psutil = pytest.importorskip("psutil", reason="psutil comes with mlflow; needed to find the worker pids")
    out = tmp_path / "ddp"
    cmd = torchrun(2, *common(tiny_dataset, out, "--hparams", TINY_HPARAMS + ",epochs=500"))
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        state_file = out / "train_state.json"
        deadline = time.time() + 180
        while time.time() < deadline and not (state_file.exists() and json.loads(state_file.read_text())["step"] >= 2):
            time.sleep(0.2)
        rank0 = json.loads(state_file.read_text())["pid"]
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.pid != rank0
                   and "ttsops.train" in " ".join(c.cmdline())]
        assert len(workers) == 1, [c.cmdline() for c in workers]
        workers[0].send_signal(signal.SIGINT)  # rank 1 only, not torchrun
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            for c in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    c.kill()
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "weights identical on all 2 ranks" in " ".join(output.split())
    assert json.loads(state_file.read_text())["status"] == "stopped"
