"""Import boundaries: the operator never imports the dev cluster, and the dev cluster never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from asyncdiff_devcluster.testing import PACKAGE_ROOT


def test_operator_package_does_not_import_the_dev_cluster() -> None:
    operator_pkg = PACKAGE_ROOT / "asyncdiff_operator"
    offenders = [
        str(path.relative_to(PACKAGE_ROOT))
        for path in operator_pkg.rglob("*.py")
        if "asyncdiff_devcluster" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_dev_cluster_imports_without_torch() -> None:
    code = (
        "import sys, importlib, pkgutil, asyncdiff_devcluster as p\n"
        "for m in pkgutil.walk_packages(p.__path__, 'asyncdiff_devcluster.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=Path("/")
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
