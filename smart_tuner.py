#!/usr/bin/env python
"""The spec's entry point (SPEC §3: "the main entry smart_tuner.py starts with a config file").

    python smart_tuner.py --config configs/demo.yaml [key=value ...]

Same as ``ttsops tune``: it runs ``ttsops.tune.main`` with the CLI's logging and
error handling (a TtsopsError is one line and exit code 2).
"""

from __future__ import annotations

import sys

from ttsops.cli import configure_logging, run_main
from ttsops.tune import main

if __name__ == "__main__":
    args = sys.argv[1:]
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    configure_logging(debug)
    sys.exit(run_main(main, args, debug))
