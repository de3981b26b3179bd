"""``python -m safe_rotating.server``: the same as ``safe-rotating-server``."""

import sys

from safe_rotating.server.cli import main

sys.exit(main())
