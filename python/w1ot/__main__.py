"""``python -m w1ot``: the ``w1ot`` command."""

import sys

from w1ot.cli import main

sys.exit(main())
