"""TrainerWrapper against real trainer processes (the foreign numpy trainer, a few seconds each).

The tests marked ``LAUNCHES`` run twice: each launch a fresh interpreter (``adapter.preload: []``),
and each launch a fork of the fork server (``preload: [numpy]``): the contract is the same."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.integration.smart_tuner.fixtures.tuner_testkit import foreign_adapter, real_config, wait_for
from ttsops.config import AdapterConfig
from ttsops.smart_tuner.trainer.command import Checkpoint, LaunchSpec
from ttsops.smart_tuner.trainer.trainer_wrapper import (
    FORK_SERVER_LOG,
    LOG_FILE,
    PID_FILE,
    TrainerWrapper,
    pid_alive,
    proc_start_ticks,
    read_pid_file,
)
from ttsops.train.adapter import Tacotron2Adapter


def _spec(tmp_path: Path, **kw) -> LaunchSpec:
    base = dict(generation=3, gen_dir=tmp_path / "gen", hparams={"lr": 0.1, "layers": 2}, epochs=3)
    base.update(kw)
    return LaunchSpec(**base)


# --- real processes ----------------------------------------------------------------------------
def _wrapper(**kw) -> TrainerWrapper:
    adapter_kw = {k: kw.pop(k) for k in list(kw) if k in ("stop_grace_s", "kill_grace_s", "preload")}
    return TrainerWrapper(foreign_adapter(epoch_seconds=kw.pop("epoch_seconds", 0.3), **adapter_kw), **kw)


LAUNCHES = pytest.mark.parametrize("preload", [[], ["numpy"]], ids=["fresh", "forked"])


def _forked(w: TrainerWrapper, gen: Path) -> bool:
    """Whether the last launch in ``gen`` was a fork of the wrapper's fork server (checked, not assumed)."""
    header = [ln for ln in (gen / LOG_FILE).read_text().splitlines() if ln.startswith("=== ttsops tuner")][-1]
    return "forked from the fork server" in header


@LAUNCHES
def test_run_to_completion_writes_log_pid_file_and_checkpoints(tmp_path, preload):
    w = _wrapper(epoch_seconds=0.0, preload=preload)
    proc = w.launch(_spec(tmp_path))
    assert w.wait_exit(proc, 60)
    assert proc.returncode() == 0
    gen = tmp_path / "gen"
    assert _forked(w, gen) == bool(preload)
    log = (gen / LOG_FILE).read_text()
    assert "generation 3 attempt 0" in log and "finished at step 30" in log
    assert read_pid_file(gen)["pid"] == proc.pid
    assert w.latest_checkpoint(gen).name == "ckpt-000030.npz"
    assert list((gen / "logs").glob("events.out.tfevents.*"))


@LAUNCHES
def test_sigint_stop_keeps_a_loadable_checkpoint_and_resume_continues(tmp_path, preload):
    w = _wrapper(epoch_seconds=2.0, preload=preload)
    spec = _spec(tmp_path, epochs=50)
    proc = w.launch(spec)
    gen = spec.gen_dir
    wait_for(lambda: "from step 0" in (gen / LOG_FILE).read_text(), 30, "trainer start")
    res = w.stop(proc)
    assert (res.escalation, res.returncode) == ("SIGINT", 0)
    ckpt = w.latest_checkpoint(gen)
    with np.load(ckpt) as ck:
        step = int(ck["step"])
        assert step > 0 and ck["W0"].shape == (3, 8)
    resumed = w.launch(
        LaunchSpec(**{**spec.__dict__, "checkpoint": Checkpoint("resume", ckpt), "epochs": 1, "attempt": 1})
    )
    assert w.wait_exit(resumed, 60) and resumed.returncode() == 0
    assert f"from step {step}" in (gen / LOG_FILE).read_text()
    assert _forked(w, gen) == bool(preload)


@LAUNCHES
def test_sigint_ignored_escalates_to_sigterm(tmp_path, monkeypatch, preload):
    monkeypatch.setenv("FOREIGN_IGNORE_SIGINT", "1")
    w = _wrapper(epoch_seconds=2.0, stop_grace_s=0.5, preload=preload)
    proc = w.launch(_spec(tmp_path, epochs=50))
    wait_for(lambda: "from step 0" in (tmp_path / "gen" / LOG_FILE).read_text(), 30, "trainer start")
    res = w.stop(proc)
    assert res.escalation == "SIGTERM" and res.returncode == 0  # SIGTERM: checkpoint and exit 0


def test_unkillable_politely_gets_sigkill(tmp_path):
    code = (
        "import signal, threading; signal.signal(2, signal.SIG_IGN); signal.signal(15, signal.SIG_IGN);"
        "print('re' + 'ady', flush=True); threading.Event().wait(60)"
    )
    adapter = AdapterConfig(
        command=["{python}", "-c", code], hparams_style="env_json", stop_grace_s=0.3, kill_grace_s=0.3
    )
    w = TrainerWrapper(adapter)
    proc = w.launch(_spec(tmp_path))
    log = tmp_path / "gen" / LOG_FILE  # the header line names the command, so look for 'ready' alone
    wait_for(lambda: "\nready" in log.read_text(), 30, "process start")
    res = w.stop(proc)
    assert res.escalation == "SIGKILL" and res.returncode == -signal.SIGKILL


def _signal_masks(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v, 16) for k, _, v in (ln.partition(":\t") for ln in lines) if k in ("SigIgn", "SigBlk")}


_KI_TRAINER = (
    "import sys, time\nprint('re' + 'ady', flush=True)\n"
    "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('saved on KeyboardInterrupt'); sys.exit(0)\n"
)


@LAUNCHES
def test_trainer_starts_with_default_stop_signals_whatever_the_tuner_inherited(tmp_path, preload):
    """A shell's ``ttsops tune ... &`` starts the tuner with SIGINT ignored, and ``exec`` keeps an
    ignored signal and the signal mask (a fork server started by it inherits them too): the trainer
    must still get its KeyboardInterrupt on SIGINT."""
    script = tmp_path / "ki.py"
    script.write_text(_KI_TRAINER)
    adapter = AdapterConfig(command=["{python}", str(script)], hparams_style="env_json", preload=preload,
                            stop_grace_s=3.0, kill_grace_s=1.0)
    w = TrainerWrapper(adapter)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        proc = w.launch(_spec(tmp_path))
    finally:
        signal.signal(signal.SIGINT, old)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    log = tmp_path / "gen" / LOG_FILE
    wait_for(lambda: "\nready" in log.read_text(), 30, "process start")
    assert _forked(w, tmp_path / "gen") == bool(preload)
    masks = _signal_masks(proc.pid)
    for sig in (signal.SIGINT, signal.SIGTERM):
        assert not masks["SigIgn"] & (1 << (sig - 1)) and not masks["SigBlk"] & (1 << (sig - 1)), (sig, masks)
    if preload:
        assert masks["SigIgn"] & (1 << (signal.SIGPIPE - 1))  # as Python has it: a broken pipe raises, never kills
    res = w.stop(proc)
    assert (res.escalation, res.returncode) == ("SIGINT", 0)
    assert "saved on KeyboardInterrupt" in log.read_text()
    w.close()


@LAUNCHES
def test_kill_minus_nine_is_seen_as_a_crash(tmp_path, preload):
    w = _wrapper(epoch_seconds=2.0, preload=preload)
    proc = w.launch(_spec(tmp_path, epochs=50))
    wait_for(lambda: "from step 0" in (tmp_path / "gen" / LOG_FILE).read_text(), 30, "trainer start")
    os.kill(proc.pid, signal.SIGKILL)
    assert w.wait_exit(proc, 10)
    assert proc.returncode() == -signal.SIGKILL


@LAUNCHES
def test_orphan_is_found_by_pid_file_and_stopped(tmp_path, preload):
    spec = _spec(tmp_path, epochs=50)
    first = _wrapper(epoch_seconds=2.0, preload=preload)
    proc = first.launch(spec)
    wait_for(lambda: "from step 0" in (spec.gen_dir / LOG_FILE).read_text(), 30, "trainer start")
    # a new wrapper (the restarted tuner) knows only the directory
    second = _wrapper(epoch_seconds=2.0)
    orphan = second.find_orphan(spec.gen_dir)
    assert orphan is not None and orphan.pid == proc.pid and orphan.popen is None
    if not preload:  # reap it, as init would (a forked trainer is reaped by the fork server)
        threading.Thread(target=proc.popen.wait, daemon=True).start()
    res = second.stop(orphan)
    assert res.escalation == "SIGINT"
    assert second.find_orphan(spec.gen_dir) is None
    assert second.latest_checkpoint(spec.gen_dir) is not None


def test_pid_file_of_a_recycled_or_dead_pid_is_no_orphan(tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    me = os.getpid()
    assert pid_alive(me, proc_start_ticks(me))
    import socket

    for ticks in ("1", None):
        info = {"pid": me if ticks else 2**22 + 7, "start_ticks": ticks, "host": socket.gethostname()}
        (gen / PID_FILE).write_text(json.dumps(info))
        assert TrainerWrapper(AdapterConfig()).find_orphan(gen) is None


def test_missing_trainer_executable_is_a_trainer_error(tmp_path):
    from ttsops.errors import TrainerError

    w = TrainerWrapper(AdapterConfig(command=[str(tmp_path / "no-such-trainer")]))
    with pytest.raises(TrainerError, match="cannot start trainer"):
        w.launch(_spec(tmp_path))


# --- the real train.py ---------------------------------------------------------------------------
@pytest.mark.slow
def test_real_train_py_sigint_keeps_a_loadable_checkpoint_and_resumes(tmp_path, tiny_corpus, mlflow_uri):
    from tests.helpers import read_train_state
    from ttsops.model.inference import Synthesizer

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(real_config(tmp_path, tiny_corpus)))
    w = TrainerWrapper(AdapterConfig(), trainer=Tacotron2Adapter())  # the default adapter: python -m ttsops.train
    spec = LaunchSpec(
        0, tmp_path / "gen", {"learning_rate": 1e-3}, config_path=config, tracking_uri=mlflow_uri, epochs=50
    )
    proc = w.launch(spec)
    assert _forked(w, spec.gen_dir)  # the default command is forked from a server that imported train.py's modules
    wait_for(lambda: (read_train_state(spec.gen_dir) or {}).get("epoch", 0) >= 1, 300, "the first epoch")
    res = w.stop(proc)
    assert (res.escalation, res.returncode) == ("SIGINT", 0)
    state = read_train_state(spec.gen_dir)
    assert state["status"] == "stopped"
    ckpt = w.latest_checkpoint(spec.gen_dir)
    assert ckpt == Path(state["last_checkpoint"])
    wav, sr = Synthesizer.from_checkpoint(ckpt, device="cpu").synthesize("A short test.")
    assert sr > 0 and len(wav) > 0 and np.isfinite(wav).all()
    resumed = w.launch(
        LaunchSpec(
            **{
                **spec.__dict__,
                "checkpoint": Checkpoint("resume", ckpt),
                "epochs": state["epoch"] + 1,
                "attempt": 1,
            }
        )
    )
    assert w.wait_exit(resumed, 300) and resumed.returncode() == 0
    assert read_train_state(spec.gen_dir)["step"] > state["step"]
    assert f"at step {state['step']}" in (spec.gen_dir / LOG_FILE).read_text().split("attempt 1")[1]


# --- the fork server -----------------------------------------------------------------------------
def _ppid(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rfind(")") + 2 :].split()[1])


def test_forked_launches_share_one_fork_server_that_is_not_the_tuner(tmp_path):
    w = _wrapper(epoch_seconds=2.0, preload=["numpy"])
    a = w.launch(_spec(tmp_path, gen_dir=tmp_path / "a", epochs=50, generation=1))
    b = w.launch(_spec(tmp_path, gen_dir=tmp_path / "b", epochs=50, generation=2))  # TTSOPS_GENERATION differs
    for gen in ("a", "b"):  # its SIGINT handler is installed: the stop below is the contract's
        wait_for(lambda g=gen: "from step 0" in (tmp_path / g / LOG_FILE).read_text(), 30, "trainer start")
    try:
        server = w._server
        assert server is not None and server.pid not in (None, os.getpid())
        assert _ppid(a.pid) == _ppid(b.pid) == server.pid
        assert os.getpgid(a.pid) == a.pid and os.getsid(a.pid) == a.pid  # its own session, as Popen's
        assert (tmp_path / FORK_SERVER_LOG).exists()
    finally:
        for p in (a, b):
            assert w.stop(p).returncode == 0
        w.close()
    assert not server.alive


def test_a_changed_import_time_environment_starts_a_new_fork_server(tmp_path, monkeypatch):
    w = _wrapper(epoch_seconds=0.0, preload=["numpy"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    first = w.launch(_spec(tmp_path, gen_dir=tmp_path / "a"))
    assert w.wait_exit(first, 60) and first.returncode() == 0
    old = w._server
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # libraries read it when they load: the server must be new
    second = w.launch(_spec(tmp_path, gen_dir=tmp_path / "b"))
    assert w.wait_exit(second, 60) and second.returncode() == 0
    assert w._server is not old and not old.alive and w._server.pid != old.pid
    w.close()


_PROBE = """\
import os, sys, random
import numpy as np
print("probe", sys.argv[1:], os.getcwd(), os.environ.get("PROBE_VAR"), os.environ.get("TTSOPS_GENERATION"),
      repr(np.random.random()), flush=True)
code = sys.argv[1]
if code == "raise":
    raise RuntimeError("the trainer's own error")
if code == "message":
    sys.exit("the trainer's own message")
if code == "shutdown":  # what the interpreter's shutdown does, a forked child does too
    import atexit, threading, time
    atexit.register(lambda: print("the atexit handler ran"))
    threading.Thread(target=lambda: (time.sleep(0.3), print("the thread was joined"))).start()
    print("buffered output is flushed")
    code = "0"
sys.exit(int(code))
"""


def _probe_wrapper(tmp_path: Path, arg: str) -> TrainerWrapper:
    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    return TrainerWrapper(AdapterConfig(command=["{python}", str(script), arg], hparams_style="env_json",
                                        preload=["numpy"]))


def test_a_forked_trainer_gets_its_argv_cwd_environment_and_own_random_state(tmp_path, monkeypatch):
    w = _probe_wrapper(tmp_path, "0")
    monkeypatch.setenv("PROBE_VAR", "from-the-tuner")
    monkeypatch.chdir(tmp_path)
    seen = []
    for g in (1, 2):
        gen = tmp_path / f"g{g}"
        proc = w.launch(_spec(tmp_path, gen_dir=gen, generation=g))
        assert w.wait_exit(proc, 60) and proc.returncode() == 0
        assert _forked(w, gen)
        line = [ln for ln in (gen / LOG_FILE).read_text().splitlines() if ln.startswith("probe")][-1].split(" ")
        assert line[1:5] == ["['0']", str(tmp_path), "from-the-tuner", str(g)]
        seen.append(line[5])
    assert seen[0] != seen[1]  # numpy reseeded in each child, as in a fresh interpreter
    w.close()


@pytest.mark.parametrize(("arg", "code", "logged"), [
    ("3", 3, []), ("raise", 1, ["RuntimeError: the trainer's own error"]), ("message", 1, ["the trainer's own message"]),
    ("shutdown", 0, ["buffered output is flushed", "the thread was joined", "the atexit handler ran"])])
def test_a_forked_trainer_exits_with_its_own_code(tmp_path, arg, code, logged):
    """... and as the interpreter's shutdown would (threads joined, atexit, output flushed), though the
    fork server skips tearing down the modules it preloaded (fork_child._exit)."""
    w = _probe_wrapper(tmp_path, arg)
    proc = w.launch(_spec(tmp_path))
    assert w.wait_exit(proc, 60) and proc.returncode() == code
    assert _forked(w, tmp_path / "gen")
    log = (tmp_path / "gen" / LOG_FILE).read_text()
    assert all(line in log for line in logged), log[-2000:]
    w.close()


def test_a_trainer_outlives_its_fork_server_and_is_still_watched_and_stopped(tmp_path):
    w = _wrapper(epoch_seconds=2.0, preload=["numpy"])
    proc = w.launch(_spec(tmp_path, epochs=50))
    wait_for(lambda: "from step 0" in (tmp_path / "gen" / LOG_FILE).read_text(), 30, "trainer start")
    server = w._server
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: not server.alive, 10, "the server's end")
    assert proc.running  # the trainer runs on in its own session
    res = w.stop(proc)
    assert res.escalation == "SIGINT" and res.returncode == -1  # its exit status went with the server
    assert w.latest_checkpoint(tmp_path / "gen") is not None
    nxt = w.launch(_spec(tmp_path, gen_dir=tmp_path / "next", epochs=1))  # a new server for the next launch
    assert w.wait_exit(nxt, 60) and nxt.returncode() == 0 and _forked(w, tmp_path / "next")
    assert w._server is not server
    w.close()


@pytest.mark.parametrize(
    ("module", "why"),
    [("no_such_module_for_ttsops", "No module named"), ("starts_a_thread", "started Python threads")],
)
def test_a_fork_server_that_cannot_start_falls_back_to_fresh_processes(tmp_path, monkeypatch, caplog, module, why):
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading\nthreading.Thread(target=threading.Event().wait, daemon=True).start()\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    w = _wrapper(epoch_seconds=0.0, preload=[module])
    with caplog.at_level("WARNING"):
        proc = w.launch(_spec(tmp_path))
    assert w.wait_exit(proc, 60) and proc.returncode() == 0
    assert not _forked(w, tmp_path / "gen") and w.preload == []
    assert any(why in r.getMessage() and "fresh interpreter" in r.getMessage() for r in caplog.records)


@LAUNCHES
def test_a_stop_right_after_the_launch_is_not_lost(tmp_path, preload):
    """The wrapper may signal a trainer the moment ``launch`` returns: a forked child must already lead
    its own process group with its SIGINT handling in place (the server answers only then)."""
    w = _wrapper(epoch_seconds=2.0, preload=preload, stop_grace_s=30.0)
    proc = w.launch(_spec(tmp_path, epochs=50))
    res = w.stop(proc)
    assert res.escalation == "SIGINT" and res.seconds < 15, res  # not the 30 s grace, then SIGTERM
    w.close()


def test_the_fork_server_writes_the_pid_file_before_it_answers(tmp_path):
    from ttsops.smart_tuner.trainer.fork_server import ForkServer

    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    server = ForkServer(sys.executable, ["numpy"], dict(os.environ), tmp_path / FORK_SERVER_LOG)
    server.start()
    try:
        pid, ticks = server.spawn("path", str(script), ["0"], dict(os.environ), str(tmp_path), tmp_path / "log",
                                  tmp_path / PID_FILE, {"generation": 7})
        info = read_pid_file(tmp_path)
        assert info == {"generation": 7, "pid": pid, "start_ticks": ticks} and ticks is not None
        wait_for(lambda: server.exit_code(pid) is not None, 30, "the child's exit")
        assert server.exit_code(pid) == 0
    finally:
        server.close()
    assert not server.alive
