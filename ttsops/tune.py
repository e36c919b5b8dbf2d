"""``ttsops tune`` (and ``smart_tuner``, ``./smart_tuner.py``): the Smart Tuner driving our train.py.

The tuner knows a trainer only through the ``TrainerAdapter`` contract; this is where ours (the
Tacotron2 adapter, ``ttsops.train.adapter``) is handed to it.
"""

from __future__ import annotations

from ttsops.smart_tuner import cli
from ttsops.train.adapter import Tacotron2Adapter


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, trainer=Tacotron2Adapter)
