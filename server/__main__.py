"""`python -m ganserve.server`: the same as `ganserve serve`."""

import sys

from ganserve.server.app import main

sys.exit(main())
