"""``python -m safe_rotating``: the stress + verify command."""

import sys

from safe_rotating.stress import main

sys.exit(main())
