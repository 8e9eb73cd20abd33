"""The worker's exit codes, what each means, and how a failure is reported to Kubernetes.

Why documented codes: the operator's failure policy must tell a user error (bad spec, missing model: retrying cannot
help, fail at once with the reason) from an infrastructure error (S3 unreachable, a rank died: retry). torchrun
itself always exits 1 when a rank fails, so ``asyncdiff_worker.launch`` collects each rank's code and exits with
the root cause's.

| code | reason | retryable | meaning |
|------|--------|-----------|---------|
| 0  | Succeeded          | -   | all outputs and the manifest were written |
| 10 | InvalidSpec        | no  | the job spec is invalid (a field is wrong or over its limit); AsyncDiff rejected it |
| 11 | ModelNotFound      | no  | model.source (or a component) does not exist |
| 12 | ModelCorrupt       | no  | the model folder exists but cannot be loaded |
| 13 | Unsupported        | no  | the family, format or combination is not supported here (e.g. mp4 without PyAV) |
| 14 | InputUnreadable    | no  | the prompts file or an input image is missing or cannot be decoded |
| 15 | LimitExceeded      | no  | data read at run time is over a limit (prompt count, input image size) |
| 16 | StorageRejected    | no  | S3 refused the request: missing bucket, wrong credentials, access denied |
| 17 | OutOfMemory        | no  | the job does not fit the devices' memory |
| 20 | StorageUnavailable | yes | S3 unreachable, throttled or failing, after retries with backoff |
| 21 | PeerFailed         | yes | another rank died or a collective failed |
| 22 | Unexpected         | yes | any other error (a bug or an unknown infrastructure problem) |
| 24 | Interrupted        | yes | the worker got SIGTERM or SIGINT (eviction, preemption, Ctrl-C) |

Any other non-zero code (for example 1 from a crash before the worker's handler ran, or 137 for SIGKILL) is an
infrastructure failure: retryable.

On failure the worker writes one line, ``<Reason> (exit <code>, <retryable|not retryable>): <message>``, to
``/dev/termination-log`` where it exists and to ``$ASYNCDIFF_TERMINATION_LOG`` if set (the first failing rank
wins; the launcher overwrites it with the root cause).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Exit codes of ``asyncdiff-worker`` and ``asyncdiff_worker.launch`` (see the module docstring)."""

    SUCCEEDED = 0
    INVALID_SPEC = 10
    MODEL_NOT_FOUND = 11
    MODEL_CORRUPT = 12
    UNSUPPORTED = 13
    INPUT_UNREADABLE = 14
    LIMIT_EXCEEDED = 15
    STORAGE_REJECTED = 16
    OUT_OF_MEMORY = 17
    STORAGE_UNAVAILABLE = 20
    PEER_FAILED = 21
    UNEXPECTED = 22
    INTERRUPTED = 24


REASONS: dict[ExitCode, str] = {
    ExitCode.SUCCEEDED: "Succeeded",
    ExitCode.INVALID_SPEC: "InvalidSpec",
    ExitCode.MODEL_NOT_FOUND: "ModelNotFound",
    ExitCode.MODEL_CORRUPT: "ModelCorrupt",
    ExitCode.UNSUPPORTED: "Unsupported",
    ExitCode.INPUT_UNREADABLE: "InputUnreadable",
    ExitCode.LIMIT_EXCEEDED: "LimitExceeded",
    ExitCode.STORAGE_REJECTED: "StorageRejected",
    ExitCode.OUT_OF_MEMORY: "OutOfMemory",
    ExitCode.STORAGE_UNAVAILABLE: "StorageUnavailable",
    ExitCode.PEER_FAILED: "PeerFailed",
    ExitCode.UNEXPECTED: "Unexpected",
    ExitCode.INTERRUPTED: "Interrupted",
}
"""CamelCase reason per code, usable as a Kubernetes condition reason."""

USER_ERROR_CODES: frozenset[int] = frozenset(int(c) for c in ExitCode if 10 <= c < 20)
"""Codes that mean the job itself is wrong: never retried."""

RETRYABLE_CODES: frozenset[int] = frozenset(int(c) for c in ExitCode if c >= 20)
"""Codes of infrastructure failures: retried under the operator's backoffLimit."""


def is_retryable(code: int) -> bool:
    """True for infrastructure failures, including codes this table does not know (crashes, signals)."""
    return code != 0 and code not in USER_ERROR_CODES


def reason_for(code: int) -> str:
    """CamelCase reason of a code; unknown non-zero codes are ``Crashed``."""
    try:
        return REASONS[ExitCode(code)]
    except ValueError:
        return "Crashed"


@dataclass(frozen=True)
class Failure:
    """One failure, as reported by a rank or the launcher."""

    code: int
    message: str
    rank: int | None = None
    ts: float = 0.0

    @property
    def reason(self) -> str:
        return reason_for(self.code)

    @property
    def retryable(self) -> bool:
        return is_retryable(self.code)

    def line(self) -> str:
        """The one-line termination message."""
        retry = "retryable" if self.retryable else "not retryable"
        text = " ".join(self.message.split())
        if len(text) > 900:
            text = text[:897] + "..."
        return f"{self.reason} (exit {self.code}, {retry}): {text}"


def termination_log_paths() -> list[Path]:
    """Where the one-line reason goes: ``/dev/termination-log`` if it exists, and ``$ASYNCDIFF_TERMINATION_LOG``."""
    paths = []
    default = Path("/dev/termination-log")
    if default.exists():
        paths.append(default)
    env = os.environ.get("ASYNCDIFF_TERMINATION_LOG")
    if env:
        paths.append(Path(env))
    return paths


def write_termination_log(failure: Failure, *, overwrite: bool = False) -> None:
    """Write the failure line. Ranks do not overwrite a line already there (the first failure is the cause);
    the launcher does (``overwrite=True``). Never raises."""
    for path in termination_log_paths():
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if overwrite or os.fstat(fd).st_size == 0:
                    os.ftruncate(fd, 0)
                    os.write(fd, (failure.line() + "\n").encode())
            finally:
                os.close(fd)


EXIT_DIR_ENV = "ASYNCDIFF_EXIT_DIR"


def write_exit_record(failure: Failure) -> None:
    """For the launcher: record this rank's failure in ``$ASYNCDIFF_EXIT_DIR/rank-<rank>.json``. Never raises."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if not folder:
        return
    record = {"code": failure.code, "message": failure.message, "rank": failure.rank, "ts": failure.ts or time.time()}
    with contextlib.suppress(OSError):
        path = Path(folder) / f"rank-{failure.rank if failure.rank is not None else os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)


def read_exit_records(folder: Path) -> list[Failure]:
    """All rank failures recorded in ``folder``, oldest first."""
    out = []
    for path in sorted(folder.glob("rank-*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            rec = json.loads(path.read_text())
            out.append(Failure(int(rec["code"]), str(rec["message"]), rec.get("rank"), float(rec["ts"])))
    return sorted(out, key=lambda f: f.ts)


def root_cause(failures: list[Failure]) -> Failure | None:
    """The failure that explains a run: the earliest one that is not a consequence of another rank's failure
    (PeerFailed, Interrupted); else the earliest of those."""
    if not failures:
        return None
    ordered = sorted(failures, key=lambda f: f.ts)
    primary = [f for f in ordered if f.code not in (ExitCode.PEER_FAILED, ExitCode.INTERRUPTED)]
    return primary[0] if primary else ordered[0]
