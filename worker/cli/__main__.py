"""``python -m worker.cli``: the ``medseg`` console script."""

import sys

from worker.cli.main import main

sys.exit(main())
