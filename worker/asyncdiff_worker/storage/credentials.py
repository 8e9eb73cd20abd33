"""S3 credentials from a mounted Kubernetes Secret folder, or else boto3's own chain (environment, web identity).

Why only these two sources: credentials must never be in the job spec (it is stored in the CR and a ConfigMap,
readable by anyone who can read the job). A Secret mounted as files, or referenced into env vars, is the least
privilege way on Kubernetes.
"""

from __future__ import annotations

import os
from pathlib import Path

SECRET_DIR_ENV = "ASYNCDIFF_S3_SECRET_DIR"
"""A folder with files named AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN."""


def secret_dir_credentials() -> dict[str, str]:
    """boto3 client keyword arguments from ``$ASYNCDIFF_S3_SECRET_DIR``, or {} to use boto3's default chain."""
    folder = os.environ.get(SECRET_DIR_ENV)
    if not folder:
        return {}
    base = Path(folder)
    names = {
        "aws_access_key_id": "AWS_ACCESS_KEY_ID",
        "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "aws_session_token": "AWS_SESSION_TOKEN",
    }
    out: dict[str, str] = {}
    for kwarg, filename in names.items():
        path = base / filename
        if path.is_file():
            out[kwarg] = path.read_text().strip()
    if "aws_access_key_id" not in out or "aws_secret_access_key" not in out:
        return {}
    return out
