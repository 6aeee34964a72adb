"""``python -m helpers.training NAME [--epochs N] ...``: train (or load) one model (see
:func:`helpers.training.workers.main`)."""

import sys

from helpers.training.workers import main

sys.exit(main())
