"""Running one generation: what the tuner knows of a trainer (``adapter``), its command line
(``command``), starting and stopping its process (``trainer_wrapper``), following its metrics
(``log_watcher`` -> ``metrics_store``), and the runner that ties them to one Optuna trial
(``generation``)."""
