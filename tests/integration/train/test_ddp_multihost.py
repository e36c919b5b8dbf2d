"""train.py as a two-node DDP job: ``torchrun --nnodes 2``, one process on each of two "hosts"
(network namespaces joined by a bridge, each with its own hostname and a private directory the
other cannot see), gloo over the veth links. Checked like the single-host DDP tests: the ranks end
with identical weights, and a signal seen by one rank on one host stops both at the same step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import netlab
from tests.helpers import REPO, TINY_HPARAMS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(netlab.unavailable() is not None, reason=str(netlab.unavailable())),
]
PORT = 29531


def interface_of(host: netlab.Host) -> str:
    """The namespace's veth holding ``host.ip`` (gloo must be told: the hostname resolves nowhere)."""
    out = subprocess.run(["ip", "-n", host.netns, "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    return next(line.split()[1] for line in out.splitlines() if f" {host.ip}/" in line)


def workers_in(host: netlab.Host) -> list[int]:
    """PIDs of train.py processes (not torchrun) running as ``host``."""
    pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ttsops.train" in cmd and b"torch.distributed.run" not in cmd:
            out.append(int(pid))
    return out


def test_two_hosts_train_one_model_and_a_signal_on_one_host_stops_both(tiny_dataset, tmp_path):
    hidden, at = tmp_path / "hosts", tmp_path / "node"
    at.mkdir()
    with netlab.network(2) as net:
        procs, logs = [], []
        for rank, host in enumerate(net.hosts):
            own = hidden / f"h{rank}"
            own.mkdir(parents=True)
            argv = [
                "env", f"GLOO_SOCKET_IFNAME={interface_of(host)}", "OMP_NUM_THREADS=1", f"PYTHONPATH={REPO}",
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
                "--nproc_per_node", "1", "--master_addr", net.hosts[0].ip, "--master_port", str(PORT),
                "-m", "ttsops.train", "-o", str(at / "out"), "--dataset", str(tiny_dataset),
                "--hparams", TINY_HPARAMS + ",epochs=500", "resources.num_threads=1",
            ]  # fmt: skip
            log = own / "torchrun.log"
            logs.append(log)
            procs.append(subprocess.Popen(host.command(argv, own_dir=own, at=at, hidden=hidden),
                                          stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=REPO))  # noqa: SIM115
        state = hidden / "h0" / "out" / "train_state.json"
        try:
            deadline = time.monotonic() + 240
            while not (state.exists() and json.loads(state.read_text()).get("step", 0) >= 2):
                assert all(p.poll() is None for p in procs), [lg.read_text()[-3000:] for lg in logs]
                assert time.monotonic() < deadline, [lg.read_text()[-3000:] for lg in logs]
                time.sleep(0.3)
            rank1 = workers_in(net.hosts[1])
            assert len(rank1) == 1, rank1
            os.kill(rank1[0], signal.SIGINT)  # host 1's rank only: host 0 learns it in the next all-reduce
            codes = [p.wait(180) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        texts = [" ".join(lg.read_text(errors="replace").split()) for lg in logs]
        assert codes == [0, 0], [t[-3000:] for t in texts]
        assert "DDP rank 0 of 2 over gloo" in texts[0] and "weights identical on all 2 ranks" in texts[0]
        assert json.loads(state.read_text())["status"] == "stopped"
        assert not (hidden / "h1" / "out" / "train_state.json").exists()  # rank 0 alone writes the run
