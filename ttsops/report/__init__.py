"""One HTML page about a study, for people: ``ttsops report STUDY_DIR [--out DIR]``.

Everything is read from where the pipeline already keeps it:

* MLflow (``MlflowClient(tracking_uri)``): the study's parent run (tag ``ttsops.role=study``) and
  its child runs, one per generation: metric histories (learning curves), params ``tuner.*``, the
  tuner's tags (restart mode, warm-start source, plan reason, end state and reason, any
  ``early_stop.*`` decision tags), registered model versions and their aliases;
* the Optuna storage, when reachable: trial state (COMPLETE / PRUNED / FAIL) and value;
* the study directory: ``tuner_config.yaml`` (default tracking URI, storage and dataset), the
  free-running alignment images train.py writes under ``generations/gen_*/samples/step_*/``
  (else the same files from the run's MLflow artifacts), ``*decision*.json[l]`` files;
* the dataset directory: ``report.json`` / ``report.png`` of ``ttsops data build``.

The page is one file (``index.html``): plots (matplotlib, Agg) and images are embedded as base64,
and so is audio unless ``embed_audio=False`` (then the wavs are copied to ``assets/`` beside it).
collect.py reads, page.py draws and writes (template.html).
"""

from ttsops.report.collect import Generation, Sample, alignment_timeline, read_decision_files
from ttsops.report.page import build_report, main, plot_curves

__all__ = ["Generation", "Sample", "alignment_timeline", "build_report", "main", "plot_curves", "read_decision_files"]
