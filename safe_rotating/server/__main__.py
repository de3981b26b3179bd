"""``python -m safe_rotating.server``: the same as ``safe-rotating-server``."""

import sys

from .cli import main

sys.exit(main())
