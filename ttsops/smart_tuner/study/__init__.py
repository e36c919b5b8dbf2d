"""What a study remembers across tuner processes: ``history`` (trial and study user attrs in the
Optuna storage and the views of them), ``recovery`` (finishing what a dead tuner left running) and
``tracking`` (the study's MLflow parent and child runs)."""
