"""`python -m ganserve.training`: see training.cli."""

import sys

from ganserve.training.cli import main

sys.exit(main())
