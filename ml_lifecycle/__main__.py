"""``python -m ml_lifecycle``."""

import sys

from ml_lifecycle.cli import main

sys.exit(main())
