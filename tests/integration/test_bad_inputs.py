"""Every bad input is one clear line: a table of bad inputs across the CLI, the config, the dataset,
the audio, checkpoints and HTTP bodies. Each CLI case runs the real ``ttsops`` command in-process
(``ttsops.cli.main(argv)``, Coqui's run_main pattern) and must exit 2 with exactly one stderr line
``ttsops: error: ...`` naming the file, key or value at fault, no traceback, and leave nothing
written (every file under the test's directory is the same before and after). Each HTTP case goes
to the service's real app (FastAPI TestClient) and must get its 4xx with a one-line ``detail``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import TINY
from tests.integration.serve.serve_helpers import SineLoader, running_server, write_sine_checkpoint
from ttsops.cli import main as ttsops_main

TRAIN_TAIL = ["resources.device=cpu", "resources.num_threads=1"]


@dataclass(frozen=True)
class Case:
    argv: Callable[[Path], list[str]]  # builds the inputs under the test's directory, returns argv
    want: str  # in the error line; ``{tmp}`` is the test's directory


# --- inputs --------------------------------------------------------------------------------------
def dataset(tmp: Path, metadata: bytes | None = b"a1|Hello there.\na2|General Kenobi.\n",
            wavs: dict[str, bytes] | None = None) -> Path:
    """An LJSpeech-layout directory as given: ``metadata`` None means no metadata.csv at all."""
    d = tmp / "ds"
    (d / "wavs").mkdir(parents=True)
    if metadata is not None:
        (d / "metadata.csv").write_bytes(metadata)
    for name, data in (wavs or {}).items():
        (d / "wavs" / name).write_bytes(data)
    return d


def config(tmp: Path, text: str | bytes, name: str = "c.yaml") -> Path:
    p = tmp / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def tune_config(tmp: Path, **sections) -> Path:
    data = {"core_engine": {"work_dir": str(tmp / "runs")}, "training": {"dataset": str(dataset(tmp))},
            "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return config(tmp, yaml.safe_dump(data))


def tiny_checkpoint(tmp: Path) -> Path:
    """A real exact-resume checkpoint of the tiny model (configs/tiny.yaml), as train.py writes one."""
    from ttsops.train.checkpoint import save_checkpoint
    from ttsops.train.distributed import DistInfo
    from ttsops.train.hparams import HParams
    from ttsops.train.trainer import Trainer

    t = Trainer(HParams().replace(**TINY), torch.device("cpu"), DistInfo(), False, False)
    return save_checkpoint(tmp / "tiny.pt", t.state_dict("{}"))


def train(tmp: Path, *extra: str, ds: Path | None = None) -> list[str]:
    return ["train", "-o", str(tmp / "out"), "--dataset", str(ds or dataset(tmp)), *extra, *TRAIN_TAIL]


def torch_file(tmp: Path, obj: object) -> Path:
    torch.save(obj, tmp / "foreign.pt")
    return tmp / "foreign.pt"


NOT_UTF8 = "Caf\u00e9|\u00c9t\u00e9 \u00e0 Paris.\n".encode("latin-1")

CASES: dict[str, Case] = {
    # the command line
    "unknown stage": Case(lambda t: ["trian", "-o", str(t / "out")], "unknown stage 'trian'"),
    "hparam batch_size=0": Case(lambda t: train(t, "--hparams", "batch_size=0"),
                                "hparam batch_size=0: expected a value in [1, inf]"),
    "hparam val_every_epochs=0": Case(lambda t: train(t, "--hparams", "val_every_epochs=0"),
                                      "hparam val_every_epochs=0"),
    "hparam dropout out of [0, 1]": Case(lambda t: train(t, "--hparams", "dropout_decoder=1.5"),
                                         "hparam dropout_decoder=1.5: expected a value in [0, 1]"),
    "hparam negative learning rate": Case(lambda t: train(t, "--hparams", "learning_rate=-0.001"),
                                          "hparam learning_rate=-0.001"),
    "unknown hparam": Case(lambda t: train(t, "--hparams", "batch_sise=3"),
                           "unknown hparam 'batch_sise' (did you mean batch_size"),
    "hparam of the wrong type": Case(lambda t: train(t, "--hparams", "batch_size=x"),
                                     "hparam batch_size='x': expected int"),
    "hparams entry without =": Case(lambda t: train(t, "--hparams", "learning_rate"),
                                    "--hparams entry 'learning_rate': expected key=value"),
    "warm start without a checkpoint": Case(lambda t: train(t, "--warm_start"), "--warm_start needs -c"),
    "missing checkpoint": Case(lambda t: train(t, "-c", str(t / "nope.pt")),
                               "-c/--checkpoint_path: file not found: {tmp}/nope.pt"),
    "unknown dotted override": Case(lambda t: train(t, "optimization.samplr=tpe"), "optimization.samplr: unknown key"),
    "override without =": Case(lambda t: train(t, "resources.device"), "override 'resources.device': expected key=value"),
    "no dataset": Case(lambda t: ["train", "-o", str(t / "out"), *TRAIN_TAIL], "no dataset: pass --dataset"),
    "report of a missing study": Case(lambda t: ["report", str(t / "nope")], "study directory not found: {tmp}/nope"),
    "synthesize empty text": Case(lambda t: ["synthesize", " ", "-o", str(t / "out.wav"), "--model", str(t / "m.pt")],
                                  "the text is empty"),
    # the config
    "config not found": Case(lambda t: ["tune", "--config", str(t / "none.yaml")], "config file not found: {tmp}/none.yaml"),
    "config not YAML": Case(lambda t: ["tune", "--config", str(config(t, "core_engine: [1,\n"))], "{tmp}/c.yaml: not valid YAML"),
    "config not a mapping": Case(lambda t: ["tune", "--config", str(config(t, "- 1\n- 2\n"))],
                                 "{tmp}/c.yaml: top level must be a mapping, got list"),
    "config not UTF-8": Case(lambda t: ["tune", "--config", str(config(t, b"core_engine:\n  name: \xff\xfe\n"))],
                             "{tmp}/c.yaml: not UTF-8 text"),
    "config value of the wrong type": Case(
        lambda t: ["tune", "--config", str(tune_config(t, core_engine={"n_trials": "many"}))],
        "c.yaml: core_engine.n_trials: Input should be a valid integer"),
    "config unknown key": Case(lambda t: ["tune", "--config", str(tune_config(t, optimization={"samplr": "tpe"}))],
                               "c.yaml: optimization.samplr: unknown key (valid: sampler"),
    "adapter.command: []": Case(lambda t: ["tune", "--config", str(tune_config(t, adapter={"command": []}))],
                                "c.yaml: adapter.command: List should have at least 1 item"),
    "adapter.command placeholder": Case(
        lambda t: ["tune", "--config", str(tune_config(t, adapter={"command": ["{python}", "{out_dir}"]}))],
        "adapter.command: '{out_dir}': bad placeholder"),
    "ray_tune scheduler unknown": Case(
        lambda t: ["tune", "--config", str(tune_config(t, core_engine={"primary_engine": "ray_tune"},
                                                       ray_tune={"scheduler": "hyperband"}))],
        "c.yaml: ray_tune.scheduler: Input should be 'asha' or 'pbt'"),
    "search space bound": Case(
        lambda t: ["tune", "--config", str(tune_config(t, search_space={"lr": {"type": "loguniform", "low": 0, "high": 1}}))],
        "search_space.lr: Value error, loguniform needs low > 0"),
    "config hparam out of range (tuner)": Case(
        lambda t: ["tune", "--config", str(tune_config(t, training={"hparams": {"batch_size": 0}}))],
        "hparam batch_size=0: expected a value in [1, inf]"),
    "config env var not set": Case(
        lambda t: ["tune", "--config", str(tune_config(t, monitoring={"alerts": {"slack_webhook": "https://x/${TTSOPS_NO_SUCH_VAR}"}}))],
        "monitoring.alerts.slack_webhook: environment variable TTSOPS_NO_SUCH_VAR is not set"),
    "tune override of an unknown key": Case(lambda t: ["tune", "--config", str(tune_config(t)), "core_engine.n_trails=3"],
                                            "core_engine.n_trails: unknown key"),
    # the dataset
    "dataset directory missing": Case(lambda t: train(t, ds=t / "nope"), "dataset directory not found: {tmp}/nope"),
    "dataset without metadata.csv": Case(lambda t: train(t, ds=dataset(t, metadata=None)),
                                         "dataset has no metadata.csv: {tmp}/ds/metadata.csv"),
    "metadata.csv not UTF-8": Case(lambda t: train(t, ds=dataset(t, metadata=b"a1|Hello.\n" + NOT_UTF8)),
                                   "{tmp}/ds/metadata.csv:2: not UTF-8 text"),
    "metadata.csv line without text": Case(lambda t: train(t, ds=dataset(t, metadata=b"a1|Hello.\njust-an-id\n")),
                                           "{tmp}/ds/metadata.csv:2: expected 'id|text[|normalized]', got 'just-an-id'"),
    "metadata.csv empty": Case(lambda t: train(t, ds=dataset(t, metadata=b"\n\n")), "{tmp}/ds/metadata.csv: no utterances"),
    # the audio
    "every wav missing": Case(lambda t: train(t, ds=dataset(t)), "dataset {tmp}/ds: no usable clips (dropped: {'missing': 2"),
    "every wav unreadable": Case(
        lambda t: train(t, ds=dataset(t, wavs={"a1.wav": b"RIFF\x00\x00junk", "a2.wav": b"not audio at all"})),
        "no usable clips (dropped: {'missing': 0, 'too_short': 0, 'too_long': 0, 'unreadable': 2"),
    # checkpoints
    "corrupt checkpoint": Case(lambda t: train(t, "-c", str(config(t, b"\x00garbage", "bad.pt"))),
                               "cannot read checkpoint {tmp}/bad.pt"),
    "foreign torch file": Case(lambda t: train(t, "-c", str(torch_file(t, {"weights": [1, 2]}))),
                               "{tmp}/foreign.pt is not a ttsops checkpoint (no 'model' entry)"),
    "checkpoint of another architecture": Case(lambda t: train(t, "-c", str(tiny_checkpoint(t))),
                                               "{tmp}/tiny.pt: cannot resume it exactly (--warm_start loads"),
    "synthesize with a corrupt checkpoint": Case(
        lambda t: ["synthesize", "Hello.", "-o", str(t / "o.wav"), "--model", str(config(t, b"\x00x", "bad.pt"))],
        "cannot read checkpoint {tmp}/bad.pt"),
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} | {
        str(p.relative_to(root)) + "/": b"" for p in root.rglob("*") if p.is_dir()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(name, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    monkeypatch.chdir(tmp_path)  # a relative default (runs/, mlflow.db) would land here and be seen
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = case.argv(tmp_path)
    before = _files(tmp_path)
    capsys.readouterr()
    code = ttsops_main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ttsops: error: "), err
    assert case.want.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert _files(tmp_path) == before, sorted(set(_files(tmp_path)) ^ set(before))


def test_the_table_is_at_least_thirty_kinds():
    assert len(CASES) + len(HTTP_CASES) >= 30


# --- HTTP bodies ---------------------------------------------------------------------------------
HTTP_CASES = [  # (path, kwargs for the request, status, text in the one-line detail)
    ("/v1/tts", {"json": {"text": ""}}, 422, "text: String should have at least 1 character"),
    ("/v1/tts", {"json": {"text": 42}}, 422, "text: Input should be a valid string"),
    ("/v1/tts", {"json": {"text": "hi", "speaker": 3}}, 422, "speaker: Extra inputs are not permitted"),
    ("/v1/tts", {"json": ["hello"]}, 422, "body: must be a JSON object"),
    ("/v1/tts", {"content": b'{"text": "open', "headers": {"content-type": "application/json"}}, 400,
     "not valid JSON"),
    ("/v1/tts", {"json": {"text": "hi", "model": "nope"}}, 404, "model 'nope' not found (available: voice)"),
    ("/v1/tts", {"json": {"text": "x" * 201}}, 413, "text has 201 characters; the limit is 200"),
    ("/v1/tts", {"content": b"{" + b" " * 5000 + b"}", "headers": {"content-type": "application/json"}}, 413,
     "over the 4096-byte limit"),
    ("/v1/tts", {"json": {"text": "!!! ???"}}, 422, "must contain some text to speak"),
    ("/v1/audio/speech", {"json": {"model": "voice", "input": "hi", "response_format": "mp3"}}, 422,
     "response_format: Input should be 'wav'"),
    ("/v1/audio/speech", {"json": {"model": "voice", "input": "hi", "speed": 2}}, 422, "only speed 1.0"),
]


def test_bad_http_bodies_get_one_line_4xx_from_the_real_app(tmp_path):
    """The real app (``create_app``) under a real uvicorn on 127.0.0.1; the synthesizer behind it is
    the tests' sine stand-in (the model is not what is under test here)."""
    import httpx

    from ttsops.serve.app import ServeSettings, create_app

    voice = write_sine_checkpoint(tmp_path / "voice.pt", 220.0)
    cache = tmp_path / "cache"
    settings = ServeSettings(models={"voice": str(voice)}, max_text_chars=200, max_body_bytes=4096, cache_dir=cache)
    before = _files(tmp_path)
    with running_server(create_app(settings, SineLoader())) as url, httpx.Client(base_url=url) as client:
        for path, kw, status, want in HTTP_CASES:
            resp = client.post(path, **kw)
            detail = resp.json()["detail"]
            assert resp.status_code == status, (path, kw, resp.text)
            assert isinstance(detail, str) and "\n" not in detail and want in detail, (path, resp.text)
        assert client.post("/v1/tts", json={"text": "still fine"}).status_code == 200
    after = _files(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("cache")} == before  # nothing written
    assert not [k for k in after if k.endswith(".wav")]
