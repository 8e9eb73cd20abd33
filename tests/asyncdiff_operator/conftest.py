"""Make the operator and dev-cluster packages importable from the source tree when the project is not installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.find_spec("asyncdiff_devcluster")
if _spec is None or _spec.origin in (None, "namespace"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))
