"""What to try next: the Optuna engine and its storage (``opt_engine``), the sampler and pruner
registries (``samplers``), the composite ``objective``, and how the next generation restarts from
the best checkpoint (``param_scheduler``)."""
