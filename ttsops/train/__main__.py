import sys

from ttsops.cli import configure_logging, run_main
from ttsops.train.train import main

configure_logging("--debug" in sys.argv)
sys.exit(run_main(main, [a for a in sys.argv[1:] if a != "--debug"], "--debug" in sys.argv))
