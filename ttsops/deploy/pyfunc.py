"""The MLflow pyfunc flavor of a ttsops Tacotron2: text in, WAV out, for ``mlflow models serve``,
``mlflow.pyfunc.load_model`` and anything else that speaks pyfunc.

Input: a DataFrame with a string column ``text``. Output: one row per text with ``audio`` (16-bit
PCM WAV bytes, base64 in a scoring server's JSON), ``sample_rate`` and ``seconds``. Param ``seed``
(default 0): the prenet's dropout stays on at inference, so a seed makes the audio repeatable; it
is the same audio ``ttsops synthesize --seed N`` writes (Griffin-Lim with its defaults).

The model is saved as MLflow "models from code" (MLflow 3 refuses to unpickle a pickled
PythonModel by default): a three-line ``tacotron2_pyfunc.py`` that builds ``Tacotron2Pyfunc``, the
checkpoint as the artifact ``checkpoint`` (``artifacts/best_model.pt``), a signature and an input
example. The code needs the ``ttsops`` package installed where the model is loaded (its
requirements name it): serve with ``mlflow models serve -m models:/NAME@ALIAS --env-manager local``
from an environment with ttsops, or build an image with the ttsops wheel (README, "Deploy elsewhere").
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.pyfunc import PythonModel

logger = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint"
CHECKPOINT_NAME = "best_model.pt"  # the serve loader finds the checkpoint of a download by this name
DEFAULT_SEED = 0
MODEL_CODE = "tacotron2_pyfunc.py"
_CODE = (
    '"""MLflow models-from-code entry of a ttsops Tacotron2 (ttsops/deploy/pyfunc.py)."""\n'
    "import mlflow.models\n\n"
    "from ttsops.deploy.pyfunc import Tacotron2Pyfunc\n\n"
    "mlflow.models.set_model(Tacotron2Pyfunc())\n"
)


class Tacotron2Pyfunc(PythonModel):
    """A ``ttsops.model.inference.Synthesizer`` on the CPU behind pyfunc's ``predict``."""

    def load_context(self, context: Any) -> None:
        from ttsops.model.inference import Synthesizer

        self.synth = Synthesizer.from_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT], device="cpu")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from ttsops.audio.io import wav_bytes
        from ttsops.errors import ServeError

        seed = int((params or {}).get("seed", DEFAULT_SEED))
        texts = model_input["text"] if isinstance(model_input, pd.DataFrame) else pd.Series(model_input)
        rows = []
        for text in texts:
            try:
                wav, sr = self.synth.synthesize(str(text).strip(), seed=seed)
            except (ServeError, ValueError) as e:  # a scoring server answers 400 with this message
                raise MlflowException(f"cannot synthesise {text!r}: {e}", INVALID_PARAMETER_VALUE) from None
            rows.append({"audio": wav_bytes(wav, sr), "sample_rate": sr, "seconds": len(wav) / sr})
        return pd.DataFrame(rows, columns=["audio", "sample_rate", "seconds"])


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("binary", "audio"), ColSpec("long", "sample_rate"), ColSpec("double", "seconds")]),
        params=ParamSchema([ParamSpec("seed", "long", DEFAULT_SEED)]),
    )


def requirements() -> list[str]:
    """What loading the model imports, pinned to the versions that saved it (nothing is inferred:
    MLflow's inference runs the model in a subprocess, ~7 s)."""
    pins = []
    for dist in ("ttsops", "torch", "mlflow", "soundfile", "pandas"):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:  # ttsops run from a source tree
            pins.append(dist)
    return pins


def is_tacotron2_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint ttsops' Tacotron2 loads (not a foreign trainer's file)."""
    from ttsops.errors import CheckpointError
    from ttsops.model.checkpoint import load_checkpoint

    try:
        return isinstance(load_checkpoint(path).get("hparams"), dict)
    except CheckpointError:
        return False


def save_pyfunc(path: Path, checkpoint: Path) -> Path:
    """Write the pyfunc model of ``checkpoint`` to the new directory ``path``; returns ``path``."""
    with tempfile.TemporaryDirectory(prefix="ttsops-pyfunc-") as tmp:
        code = Path(tmp) / MODEL_CODE
        code.write_text(_CODE)
        ckpt = Path(tmp) / CHECKPOINT_NAME  # the artifact keeps its file name
        shutil.copyfile(checkpoint, ckpt)
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(code),
            artifacts={CHECKPOINT_ARTIFACT: str(ckpt)},
            signature=signature(),
            input_example=(pd.DataFrame({"text": ["Hello there."]}), {"seed": DEFAULT_SEED}),
            pip_requirements=requirements(),
        )
    return path
