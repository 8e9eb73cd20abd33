"""asyncdiff_worker: the torchrun job runner of AsyncDiff.

Why this package exists: on a cluster every AsyncDiffJob becomes torchrun processes running this worker, and users
run the very same job manifest on one machine with ``asyncdiff run``. It turns a validated job spec into outputs and
a result manifest in S3-compatible storage, reports progress on stdout, and fails with documented exit codes.

This ``__init__`` and the ``spec`` package import neither torch, diffusers nor boto3: the operator, which has none of
them, imports the spec to generate the CRD schema.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
