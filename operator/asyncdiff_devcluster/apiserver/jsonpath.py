"""The "simple JSONPath" subset CRD printer columns use (``.status.conditions[-1:].type``).

Why: ``additionalPrinterColumns`` are evaluated by the server to build the Table that ``kubectl get``
prints; without them kubectl only shows NAME and AGE.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"""\.([A-Za-z0-9_$-]+)|\[(-?\d*):(-?\d*)\]|\[(-?\d+)\]|\[\*\]|\[['"]([^'"]+)['"]\]""")


def find(obj: Any, path: str) -> list[Any]:
    """All values ``path`` selects in ``obj`` (empty when nothing matches)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current: list[Any] = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            return []
        pos = m.end()
        nxt: list[Any] = []
        for value in current:
            if m.group(1) is not None or m.group(5) is not None:
                key = m.group(1) if m.group(1) is not None else m.group(5)
                if isinstance(value, dict) and key in value:
                    nxt.append(value[key])
            elif m.group(4) is not None:
                if isinstance(value, list):
                    idx = int(m.group(4))
                    if -len(value) <= idx < len(value):
                        nxt.append(value[idx])
            elif m.group(0) == "[*]":
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value.values())
            else:
                if isinstance(value, list):
                    start = int(m.group(2)) if m.group(2) else None
                    stop = int(m.group(3)) if m.group(3) else None
                    nxt.extend(value[start:stop])
        current = nxt
    return current
