"""Deploying a model outside ``ttsops serve``: the MLflow pyfunc flavor the registry logs
(pyfunc.py) and ``ttsops export`` (TorchScript, ONNX) with its numerical check (cli.py)."""
