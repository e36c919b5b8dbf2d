"""Several "hosts" on this machine for the scale-out tests: network namespaces joined by a bridge,
a PostgreSQL and an ``mlflow server`` listening on the bridge, and commands run as another host.

* ``network(n)``: a bridge in the root namespace (``10.X.Y.1/24``) and ``n`` namespaces, each with
  one veth (``10.X.Y.10+i``) and its loopback; names carry a random tag so parallel runs do not
  clash. Leaving it kills whatever still runs in the namespaces and deletes them and the bridge.
* ``postgres(ip)``: a throw-away cluster (``initdb`` + ``pg_ctl`` as the ``postgres`` user, trust
  auth for the subnet) listening on ``ip``: the machine's own PostgreSQL listens on 127.0.0.1 only,
  which no namespace reaches.
* ``mlflow_server(...)``: a real ``mlflow server`` on the bridge (PostgreSQL backend store, artifacts
  proxied with ``--artifacts-destination``), stopped with its process group.
* ``Host.command(argv)``: ``argv`` as that host: its network namespace, its own hostname (UTS
  namespace: worker ids and "same host" checks differ as on real hosts) and its own file system view
  (mount namespace): its private directory is mounted at the same path on every host (``at``) and
  the directory holding every host's and server's files (``hidden``) is covered by an empty tmpfs,
  so hosts share no directory, as on real machines.

``unavailable()`` says in one line why the kernel refuses (not root, ``ip netns add`` fails), for a
skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

PG_BIN = Path("/usr/local/bin")
PG_USER = "postgres"  # initdb and postgres refuse to run as root


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add): the multi-host tests run as root in CI"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "iproute2 (ip) and util-linux (unshare) are needed for the multi-host tests"
    probe = f"ttsops-probe-{uuid.uuid4().hex[:6]}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"the kernel refuses network namespaces (ip netns add: {r.stderr.strip()})"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One namespace of a ``network``: its name, address and hostname."""

    netns: str
    ip: str
    hostname: str

    def command(self, argv: Sequence[str], *, own_dir: Path, at: Path, hidden: Path) -> list[str]:
        """``argv`` run as this host, with ``own_dir`` mounted at ``at`` and ``hidden`` emptied."""
        script = (
            'hostname "$1" && mount --bind "$2" "$3" && mount -t tmpfs tmpfs "$4" && cd "$3" && '
            "shift 4 && exec \"$@\""
        )
        return [
            "ip", "netns", "exec", self.netns,
            "unshare", "--uts", "--mount", "--propagation", "private",
            "sh", "-c", script, "sh", self.hostname, str(own_dir), str(at), str(hidden), *argv,
        ]  # fmt: skip


@dataclass(frozen=True)
class Network:
    bridge: str
    bridge_ip: str
    hosts: tuple[Host, ...]
    subnet: str


@contextmanager
def network(n: int) -> Iterator[Network]:
    tag = uuid.uuid4().hex[:6]
    a, b = 200 + int(tag[:2], 16) % 50, int(tag[2:4], 16)
    net = Network(
        f"tb{tag}",
        f"10.{a}.{b}.1",
        tuple(Host(f"ttsops-{tag}-h{i}", f"10.{a}.{b}.{10 + i}", f"host{i}-{tag}") for i in range(n)),
        f"10.{a}.{b}.0/24",
    )
    try:
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("addr", "add", f"{net.bridge_ip}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for i, h in enumerate(net.hosts):
            outside, inside = f"tv{tag}{i}", f"tp{tag}{i}"
            _ip("netns", "add", h.netns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", outside, "master", net.bridge, "up")
            _ip("link", "set", inside, "netns", h.netns)
            _ip("-n", h.netns, "link", "set", "lo", "up")
            _ip("-n", h.netns, "addr", "add", f"{h.ip}/24", "dev", inside)
            _ip("-n", h.netns, "link", "set", inside, "up")
        yield net
    finally:
        for h in net.hosts:
            kill_all_in(h.netns)
            _ip("netns", "del", h.netns, check=False)
        _ip("link", "del", net.bridge, check=False)


def kill_all_in(netns: str) -> None:
    """SIGKILL every process still in ``netns`` (workers, orphaned trainers, services)."""
    r = _ip("netns", "pids", netns, check=False)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _run_as_pg(*argv: str) -> None:
    r = subprocess.run(list(argv), user=PG_USER, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({r.returncode}): {(r.stdout + r.stderr)[-2000:]}")


@contextmanager
def postgres(ip: str, port: int, subnet: str) -> Iterator[str]:
    """A PostgreSQL cluster of its own on ``ip:port`` (trust auth from ``subnet``); yields its base
    URL ``postgresql://postgres@ip:port``. Its data lives in a /tmp directory the ``postgres`` user
    can reach (pytest's tmp dirs are private to root) and is removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ttsops-pg-"))
    data = root / "data"
    try:
        os.chmod(root, 0o755)
        shutil.chown(root, PG_USER)
        _run_as_pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {subnet} trust\n")
        opts = f"-c listen_addresses={ip} -p {port} -c unix_socket_directories={root} -c fsync=off"
        _run_as_pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "pg.log"), "-w", "start")
        yield f"postgresql://postgres@{ip}:{port}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                user=PG_USER, capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def create_database(base_url: str, name: str) -> str:
    """A new database on the cluster at ``base_url``; returns its URL."""
    import psycopg2

    conn = psycopg2.connect(f"{base_url}/postgres", connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{base_url}/{name}"


@contextmanager
def mlflow_server(ip: str, port: int, backend_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on ``ip:port`` (PostgreSQL backend store, proxied artifacts); yields its URL."""
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts), "--serve-artifacts",
        "--host", ip, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    out = open(log, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    uri = f"http://{ip}:{port}"
    try:
        wait_http(f"{uri}/health", 180, proc, log)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        out.close()


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> float:
    """Seconds until ``url`` answers 200; raises (with the log's tail) if the process exits or time runs out."""
    started = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited {proc.returncode}: {_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{url}: no answer after {timeout_s:.0f} s: {_tail(log)}")
        time.sleep(0.25)


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
