"""Storage for jobs: ``file://`` and ``s3://`` reads and writes, and the node-local model cache.

Why a package: the S3 backend (boto3, retries, multipart, checksums) and the file backend share one facade
(``Storage``), and boto3 is imported only when an S3 URI is used, so importing this is cheap.
"""

from asyncdiff_worker.storage.store import Storage
from asyncdiff_worker.storage.types import (
    ObjectInfo,
    ObjectTooLarge,
    PutResult,
    S3Settings,
    StorageNotFound,
    TransferSettings,
)

__all__ = [
    "ObjectInfo",
    "ObjectTooLarge",
    "PutResult",
    "S3Settings",
    "Storage",
    "StorageNotFound",
    "TransferSettings",
]
