"""Fixtures of the worker tests: moto S3 servers on 127.0.0.1, a TCP proxy that can cut S3 off, job files.

Why real servers: the worker must be tested against the real S3 HTTP API through boto3 (signatures, multipart,
checksums, error codes). moto's normal server is shared by the session (each test gets its own bucket); its
IAM-auth mode runs in a separate process, only for the wrong-credentials cases.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_worker.embedded_s3 import TEST_CREDENTIALS, EmbeddedS3, start_embedded_s3
from asyncdiff_worker.launch import free_port

_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[EmbeddedS3]:
    """moto's S3 server (normal mode: any credentials are accepted) on a free port, for the whole session."""
    saved = {k: os.environ.get(k) for k in TEST_CREDENTIALS}
    os.environ.update(TEST_CREDENTIALS)
    server = start_embedded_s3()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Quick retries, a private model cache and termination log, no stray job identity from the environment."""
    monkeypatch.setenv("ASYNCDIFF_S3_ATTEMPTS", "3")
    monkeypatch.setenv("ASYNCDIFF_S3_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("ASYNCDIFF_S3_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("ASYNCDIFF_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("ASYNCDIFF_TERMINATION_LOG", str(tmp_path / "termination-log"))
    monkeypatch.setenv("ASYNCDIFF_PROGRESS_INTERVAL", "0")
    for name in (
        "ASYNCDIFF_JOB_NAME",
        "ASYNCDIFF_JOB_UID",
        "ASYNCDIFF_ATTEMPT",
        "ASYNCDIFF_SHARD_INDEX",
        "ASYNCDIFF_INDEX_RETRY",
        "ASYNCDIFF_RUN_ID",
        "ASYNCDIFF_SHARD_QUEUE",
        "ASYNCDIFF_GROUP",
        "ASYNCDIFF_GROUPS",
        "ASYNCDIFF_POD_NAME",
        "ASYNCDIFF_S3_SECRET_DIR",
        "ASYNCDIFF_PROGRESS_FILE",
        "ASYNCDIFF_EXIT_DIR",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(s3_server: EmbeddedS3) -> Any:
    """A boto3 client of the session's moto server."""
    return s3_server.client()


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh, empty bucket."""
    name = f"test-bucket-{os.getpid()}-{next(_bucket_ids)}"
    s3.create_bucket(Bucket=name)
    return name


def _upload_folder(client: Any, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _write_job(folder: Path, spec: dict[str, Any], name: str = "job", *, manifest: bool = True) -> Path:
    """Write an AsyncDiffJob manifest (or a bare spec) to ``folder/<name>.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = spec
    if manifest:
        doc = {"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "metadata": {"name": name}, "spec": spec}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _s3_output(endpoint: str, bucket: str, prefix: str = "results", **extra: Any) -> dict[str, Any]:
    return {
        "uri": f"s3://{bucket}/{prefix}",
        "endpointUrl": endpoint,
        "forcePathStyle": True,
        "region": "us-east-1",
        **extra,
    }


@pytest.fixture
def upload_folder() -> Callable[[Any, Path, str, str], None]:
    """``upload_folder(client, folder, bucket, prefix)``: copy a local folder to S3."""
    return _upload_folder


@pytest.fixture
def write_job() -> Callable[..., Path]:
    """``write_job(folder, spec, name="job", manifest=True) -> path``: write an AsyncDiffJob (or a bare spec)."""
    return _write_job


@pytest.fixture
def s3_output() -> Callable[..., dict[str, Any]]:
    """``s3_output(endpoint, bucket, prefix="results", **extra)``: a spec.output for S3."""
    return _s3_output


# -- moto in IAM-auth mode ---------------------------------------------------------------------------------------


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto server on port {port} did not start")


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[dict[str, str]]:
    """moto's server in IAM-auth mode (a separate process): returns its endpoint, a bucket and a valid key pair."""
    import boto3
    from botocore.config import Config

    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="worker")
        iam.put_user_policy(
            UserName="worker",
            PolicyName="s3",
            PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
        )
        key = iam.create_access_key(UserName="worker")["AccessKey"]
        good = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            config=Config(s3={"addressing_style": "path"}),
        )
        good.create_bucket(Bucket="auth-bucket")
        yield {
            "endpoint": endpoint,
            "bucket": "auth-bucket",
            "key": key["AccessKeyId"],
            "secret": key["SecretAccessKey"],
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- a TCP proxy that can cut S3 off ---------------------------------------------------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a target; after ``allow`` requests whose request line matches ``pattern`` it
    closes every connection and stops listening (S3 "goes down"), without forwarding the next one."""

    def __init__(self, target_port: int, *, pattern: bytes, allow: int, drop_first: int = 0) -> None:
        self.target_port = target_port
        self.drop_first = drop_first
        self.dropped = 0
        self.pattern = re.compile(pattern)
        self.allow = allow
        self.seen = 0
        self.down = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.down.set()
        with self._lock:
            for conn in [self.listener, *self._conns]:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def _accept(self) -> None:
        while not self.down.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.dropped < self.drop_first:  # a transient outage: reset the first connections
                self.dropped += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, inspect: bool) -> None:
        try:
            while not self.down.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if inspect:
                    with self._lock:
                        self.seen += len(self.pattern.findall(data))
                        over = self.seen > self.allow
                    if over:
                        self.cut()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def cuttable_proxy(s3_server: EmbeddedS3) -> Iterator[Callable[..., CuttableProxy]]:
    proxies: list[CuttableProxy] = []

    def make(pattern: bytes = rb"^$", allow: int = 1 << 30, drop_first: int = 0) -> CuttableProxy:
        port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
        proxy = CuttableProxy(port, pattern=pattern, allow=allow, drop_first=drop_first)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.cut()
