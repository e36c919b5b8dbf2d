"""``ttsops reproduce``: turn a recorded run back into a run and check that it is the same one.

record.py reads what train.py recorded in MLflow (``models:/NAME@ALIAS`` leads to the run that made
the model); checks.py refuses other code or other data in one line; rerun.py restores the data,
reruns train.py (first the runs a warm start came from) into new runs tagged
``ttsops.reproduces=<run id>``; compare.py sets the curves side by side and gives the verdict;
cli.py is the command. What is recorded, and which differences are expected: docs/train_contract.md.
"""
