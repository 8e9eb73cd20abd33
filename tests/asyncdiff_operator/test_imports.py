"""Import boundaries: the operator (its handlers, Kubernetes I/O, CLI, CRD generator) never loads torch or
diffusers, and the worker never loads kopf. Each check runs in a fresh interpreter and reads ``sys.modules``.

Why: the operator image has no torch (a 2 GB dependency it must not need), and the worker image may lack kopf; an
import that sneaks in through a shared module would only fail in production.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

OPERATOR_MODULES = [
    "asyncdiff_operator.handlers",
    "asyncdiff_operator.kube",
    "asyncdiff_operator.main",
    "asyncdiff_operator.status",
    "asyncdiff_operator.children",
    "asyncdiff_operator.crd",
    "asyncdiff_operator.usercli",
    "asyncdiff_cli.main",
]
WORKER_MODULES = [
    "asyncdiff_worker.spec",
    "asyncdiff_worker.spec.rules",
    "asyncdiff_worker.entrypoint",
    "asyncdiff_worker.launch",
    "asyncdiff_worker.local_run",
    "asyncdiff_worker.preflight",
    "asyncdiff_worker.model_family",
]


def loaded_after_import(module: str, watched: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(','.join(m for m in {watched!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


@pytest.mark.parametrize("module", OPERATOR_MODULES)
def test_operator_modules_never_load_torch(module: str) -> None:
    assert loaded_after_import(module, ("torch", "diffusers", "transformers", "accelerate")) == []


@pytest.mark.parametrize("module", WORKER_MODULES)
def test_worker_modules_never_load_kopf(module: str) -> None:
    assert loaded_after_import(module, ("kopf",)) == []


def test_the_check_itself_sees_a_loaded_module() -> None:
    """The probe is not vacuous: importing kopf's users does show kopf."""
    assert loaded_after_import("asyncdiff_operator.handlers", ("kopf",)) == ["kopf"]
