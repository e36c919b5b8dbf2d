"""scripts/setup.sh picks the torch build: the CPU one from PyTorch's CPU index where pip's configuration
has no local wheel, never PyPI's default (CUDA) build; TTSOPS_TORCH switches to a CUDA build.

A machine without the local wheel is simulated by running pip with no configuration (PIP_CONFIG_FILE=/dev/null,
no find-links) and a PEP 503 index on disk standing in for download.pytorch.org (the outside edge), holding a
minimal wheel named like PyTorch's CPU build. The real pip resolves the requirement against it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"


def _pinned_torch() -> str:
    line = next(x for x in (REPO / "constraints.txt").read_text().splitlines() if x.startswith("torch=="))
    return line.split("==")[1].split("+")[0]


def _fake_wheel(index: Path, version: str) -> Path:
    """A minimal wheel `torch-VERSION-py3-none-any.whl` in a PEP 503 layout under `index`."""
    d = index / "torch"
    d.mkdir(parents=True)
    name = f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version.split('+')[0]}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(d / name, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(text)}")
        zf.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    (d / "index.html").write_text(f'<html><body><a href="{name}">{name}</a></body></html>\n')
    return d / name


def _no_local_wheels(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="run scripts/setup.sh first")
def test_without_a_local_wheel_torch_comes_from_the_cpu_index(tmp_path: Path) -> None:
    version = _pinned_torch()
    index = tmp_path / "index"
    _fake_wheel(index, f"{version}+cpu")
    env = _no_local_wheels(tmp_path, TTSOPS_TORCH_INDEX=index.as_uri())
    out = subprocess.run(["bash", str(SETUP), "--torch-source"], env=env, capture_output=True, text=True, check=True)
    req, source = out.stdout.split()
    assert req == f"torch=={version}+cpu"
    assert source == index.as_uri()
    # the real pip, given that index the way setup.sh passes it, resolves the CPU build from it
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--no-deps",
                    "--extra-index-url", source, req, "--report", str(report)], env=env, check=True,
                   capture_output=True)
    (item,) = json.loads(report.read_text())["install"]
    assert item["metadata"]["version"] == f"{version}+cpu"
    assert item["download_info"]["url"].startswith(index.as_uri())


def test_the_default_index_is_pytorchs_cpu_index_and_cuda_is_a_choice(tmp_path: Path) -> None:
    version = _pinned_torch()
    env = _no_local_wheels(tmp_path, PIP_NO_INDEX="1")  # nothing configured finds torch
    out = subprocess.run(["bash", str(SETUP), "--torch-source"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [f"torch=={version}+cpu", "https://download.pytorch.org/whl/cpu"]
    env["TTSOPS_TORCH"] = "cu126"
    out = subprocess.run(["bash", str(SETUP), "--torch-source"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [f"torch=={version}+cu126", "https://download.pytorch.org/whl/cu126"]


def test_ci_runs_the_readmes_test_command() -> None:
    import yaml

    readme = (REPO / "README.md").read_text()
    assert "scripts/test.sh     # every test" in readme and ".github/workflows/ci.yml" in readme
    ci_run = [x for x in (REPO / ".ci" / "run").read_text().splitlines() if x and not x.startswith(("#", "set ", "cd "))]
    assert ci_run == ["scripts/test.sh"]
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert [s["run"] for s in job["steps"] if "run" in s] == [".ci/run"]
    assert {"postgres", "redis"} <= set(job["services"])
    (py,) = [s["with"]["python-version"] for s in job["steps"] if "setup-python" in s.get("uses", "")]
    assert py == "3.11"
