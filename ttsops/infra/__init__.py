"""Shared infrastructure every plane uses, written once: atomic file writes (``atomic``), the MLflow
tag schema and store resolution (``tracking``), plots (``plotting``) and ``k=v`` hparams strings
(``kv``). Nothing here imports a plane; every plane may import it."""
