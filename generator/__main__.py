"""`python -m generator [--spec PATH] [--out DIR] [--check]` and `python -m generator scaffold`."""

from __future__ import annotations

import sys

from generator.cli import main

sys.exit(main(sys.argv[1:]))
