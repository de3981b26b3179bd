"""``python -m safe_rotating.stress``: the ``safe-rotating-stress`` command."""

from __future__ import annotations

import sys

from safe_rotating.stress.cli import main

if __name__ == "__main__":
    sys.exit(main())
