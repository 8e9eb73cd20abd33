"""``python -m asyncdiff_devcluster ...``: the same commands as ``asyncdiff dev-cluster ...``."""

from __future__ import annotations

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:]))
