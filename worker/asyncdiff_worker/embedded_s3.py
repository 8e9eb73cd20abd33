"""An embedded S3-compatible server (moto) on 127.0.0.1, for the demo and the tests.

Why moto's server mode: it speaks the real S3 HTTP API (multipart, checksums, metadata, errors), so the worker is
exercised through boto3 exactly as against a real store, with nothing to install beyond a dev dependency. It keeps
everything in memory: whatever it holds is gone when it stops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from asyncdiff_worker.launch import free_port

TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class EmbeddedS3:
    """A running moto server."""

    server: Any
    endpoint_url: str

    def client(self, **kwargs: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=kwargs.pop("aws_access_key_id", TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"]),
            aws_secret_access_key=kwargs.pop("aws_secret_access_key", TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            **kwargs,
        )

    def stop(self) -> None:
        self.server.stop()


def start_embedded_s3(port: int | None = None) -> EmbeddedS3:
    """Start moto's threaded server on 127.0.0.1 (a free port unless given)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # moto is a dev dependency
        raise RuntimeError("the embedded S3 server needs moto[server] (pip install 'moto[server]')") from exc
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    chosen = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=chosen, verbose=False)
    server.start()
    return EmbeddedS3(server, f"http://127.0.0.1:{chosen}")


def use_test_credentials() -> None:
    """Set dummy credentials in this process's environment (inherited by the workers) where none are set."""
    for key, value in TEST_CREDENTIALS.items():
        os.environ.setdefault(key, value)
