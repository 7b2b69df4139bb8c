"""`python -m server`: the same as `ganserve serve`."""

import sys

from server.app import main

sys.exit(main())
