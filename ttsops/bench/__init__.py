"""Replay benchmarks: the early-stop rules replayed over recorded and synthetic learning curves
(``ttsops bench early-stop CURVES_DIR``; docs/early_stopping.md). curves.py reads the curve files,
replay.py replays the rules and summarises, cli.py prints the tables."""
