import sys

from ttsops.cli import main

sys.exit(main())
