"""Ray Tune as the Smart Tuner's engine (``core_engine.primary_engine: ray_tune``, extra ``ttsops[ray]``).

The same train.py generations as the Optuna engine, through the same ``TrainerWrapper``,
``GenerationRunner``, watcher, metrics store, objective and in-trial early stop
(``trainable.py``); Ray decides which trials run and which stop (``study.py``): Optuna's TPE through
Ray's ``OptunaSearch`` with ASHA pruning, or Population Based Training, whose exploit step is our
warm restart (a trial that falls behind continues from a better trial's checkpoint with perturbed
hparams: train.py ``--checkpoint_path ... --warm_start``). Each run of a trainer is an MLflow
child run of the study's parent, like an Optuna generation; champions go to the same registry.
"""

from ttsops.errors import ConfigError


def require_ray() -> None:
    """A clear one-line error when the ``ray`` extra is not installed."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise ConfigError(
            "core_engine.primary_engine: ray_tune needs Ray Tune: pip install 'ttsops[ray]' (ray[tune]==2.60.0)"
        ) from None
