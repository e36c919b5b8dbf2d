"""Smart Tuner V2 (SPEC §3): watches train.py's metrics, proposes hparams, restarts the trainer warm,
stops the search and alerts. One subpackage per plane, in the order a generation flows through them:

* ``search/``     what to try next: OptimizationEngine (``opt_engine``), samplers, the objective,
                  and the restart plan (``param_scheduler``);
* ``trainer/``    running one generation: the TrainerAdapter contract, command building and the
                  process (``trainer_wrapper``), metric watchers (``log_watcher``), ``metrics_store``,
                  and the generation runner;
* ``early_stop/`` when to stop: the pure detectors, their weighted vote, EarlyStopController;
* ``alerts/``     who hears about it: AlertManager, its channels, the tuner's Notifier;
* ``study/``      what the study remembers: history (Optuna user attrs), crash recovery, MLflow runs.

``tuner.py`` is the loop on top, ``cli.py`` its command line. The tuner never imports ``train`` or
``model``: it reaches a trainer only through ``trainer.adapter.TrainerAdapter``.
"""
