"""`python -m runtime.cli` is the `raftfsm` command."""

import sys

from runtime.cli import main

sys.exit(main())
