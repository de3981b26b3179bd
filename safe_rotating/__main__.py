"""``python -m safe_rotating``: the stress + verify command."""

import sys

from .stress import main

sys.exit(main())
