"""``ttsops demo``: the whole pipeline on a corpus it synthesises itself, in one command.

    ttsops demo [--out demo_out] [--minutes-budget 20] [--quick]

Stages (each ends by writing ``<out>/.stages/<name>.json`` atomically; a re-run skips every stage
that has its marker, and re-runs everything after the first stage it has to run again):

1. ``synth``      long "raw recordings": flite ``rms`` utterances joined by 0.3-2 s pauses, with
                  white noise 35 dB below the speech (one voice: the model is single-speaker)
2. ``segment``    ``ttsops data segment``     (silero-vad clips)
3. ``transcribe`` ``ttsops data transcribe``  (pocketsphinx; WER against the known text is measured)
4. ``build``      ``ttsops data build``       (LJSpeech layout, report.json/png)
5. ``version``    ``ttsops data version``     (DVC, local remote)
6. ``tune``       ``ttsops tune --config configs/demo.yaml`` + overrides; an interrupted study
                  resumes (Optuna storage) when the demo is run again
7. ``registry``   the champion: the version the tuner registered and aliased
8. ``samples``    sample sentences from ``best_model.pt`` (wav + alignment image)
9. ``report``     ``<out>/report/index.html`` (ttsops.report)

``--minutes-budget`` is the wall-clock budget of the whole demo: the tuner gets what the data
plane left, minus a reserve for stages 7-9. ``--quick`` is a tiny variant (a few clips, two
one-epoch generations of a tiny model, promotion gate off) for the end-to-end test.

plan.py says what the demo is, stages.py does each stage, cli.py runs them and prints the result.
"""

from ttsops.demo.cli import main, run
from ttsops.demo.plan import FULL, MIN_TUNE_MIN, QUICK, RESERVE_MIN, Demo, DemoPlan
from ttsops.demo.stages import tune_budget

__all__ = ["FULL", "MIN_TUNE_MIN", "QUICK", "RESERVE_MIN", "Demo", "DemoPlan", "main", "run", "tune_budget"]
