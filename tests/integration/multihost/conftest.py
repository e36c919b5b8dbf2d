"""The multi-host lab for these tests (tests/netlab.py): three namespaces on a bridge, one
PostgreSQL and one ``mlflow server`` on the bridge, made once per session and removed after it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import netlab
from tests.helpers import REPO, free_port

N_HOSTS = 3
ENV = {
    "PYTHONPATH": str(REPO),
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "WANDB_MODE": "offline",
    "RAY_USAGE_STATS_ENABLED": "0",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class Lab:
    net: netlab.Network
    pg: str  # postgresql://postgres@<bridge>:<port>
    mlflow: str  # http://<bridge>:<port>
    root: Path
    store: Path  # every host's and server's files: hidden from every host

    def new_database(self, prefix: str) -> str:
        return netlab.create_database(self.pg, f"{prefix}_{uuid.uuid4().hex[:8]}")

    def dirs(self, name: str) -> tuple[list[Path], Path]:
        """Per-host private directories for one test, and the path each host sees its own at."""
        own = [self.store / name / f"h{i}" for i in range(N_HOSTS)]
        for d in own:
            d.mkdir(parents=True)
        at = self.root / f"host-{name}"
        at.mkdir()
        return own, at

    def start(self, i: int, argv: list[str], own: Path, at: Path, log: Path) -> subprocess.Popen:
        """``argv`` on host ``i`` (its own directory at ``at``), output to ``log`` (outside every host)."""
        out = open(log, "ab")  # noqa: SIM115 - the child holds it; closed when the test ends
        cmd = self.net.hosts[i].command(argv, own_dir=own, at=at, hidden=self.store)
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV})


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = netlab.unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("lab")
    store = root / "store"
    (store / "server").mkdir(parents=True)
    with netlab.network(N_HOSTS) as net, netlab.postgres(net.bridge_ip, free_port(), net.subnet) as pg:
        backend = netlab.create_database(pg, "mlflow")
        with netlab.mlflow_server(
            net.bridge_ip, free_port(), backend, store / "server" / "artifacts", store / "server" / "mlflow.log"
        ) as uri:
            yield Lab(net, pg, uri, root, store)


PYTHON = sys.executable
