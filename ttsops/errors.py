"""Every error ttsops raises on purpose, in one tree.

The CLI turns these into one clear line and a non-zero exit (tracebacks only with ``--debug``)::

    TtsopsError
    ├── ConfigError          a config file, key, value or --hparams entry is wrong
    ├── DataError            a dataset, audio file or manifest is missing or unreadable
    ├── CheckpointError      a checkpoint cannot be read, or does not fit the model
    ├── TrainerError         a train.py process failed, hung or could not be stopped
    ├── TunerError           the tuner's storage, study or loop is in a state it cannot go on from
    ├── RegistryError        the MLflow Model Registry refused an operation
    ├── AlertError           a notification channel failed (never raised into training)
    ├── ServeError           the inference service cannot load or run a model
    └── ReproduceError       a run cannot be rerun as recorded (other code or data, records missing)

Messages name the file, key or value at fault and, where it helps, what is allowed.
"""

from __future__ import annotations


class TtsopsError(Exception):
    """Base of every deliberate ttsops error."""


class ConfigError(TtsopsError):
    """A config file, key, value or ``--hparams`` entry is wrong."""


class DataError(TtsopsError):
    """A dataset, audio file or manifest is missing or unreadable."""


class CheckpointError(TtsopsError):
    """A checkpoint cannot be read or does not fit the model."""


class TrainerError(TtsopsError):
    """A train.py process failed, hung or could not be stopped."""


class TunerError(TtsopsError):
    """The tuner cannot go on from the state of its storage or study."""


class RegistryError(TtsopsError):
    """The MLflow Model Registry refused an operation."""


class AlertError(TtsopsError):
    """A notification channel failed."""


class ServeError(TtsopsError):
    """The inference service cannot load or run a model."""


class ReproduceError(TtsopsError):
    """A run cannot be rerun as recorded: other code or data, or its records are missing."""
