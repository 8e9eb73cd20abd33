"""The worker's exceptions, each carrying the exit code it maps to.

Why typed errors: code deep inside (storage, input reading, model loading) knows *what* went wrong; the entry point
only has to turn the exception into an exit code, a JSON error line and a termination message. ``classify`` also
maps the library's and torch's errors without importing torch.
"""

from __future__ import annotations

from asyncdiff_worker.exit_codes import ExitCode, Failure


class WorkerError(Exception):
    """A failure with a known exit code. The message is one line and names the field or URI involved."""

    code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, *, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class SpecError(WorkerError):
    """The spec is invalid; ``messages`` holds one line per wrong field."""

    code = ExitCode.INVALID_SPEC

    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        super().__init__("; ".join(self.messages))


class ModelNotFound(WorkerError):
    code = ExitCode.MODEL_NOT_FOUND


class ModelCorrupt(WorkerError):
    code = ExitCode.MODEL_CORRUPT


class Unsupported(WorkerError):
    code = ExitCode.UNSUPPORTED


class InputUnreadable(WorkerError):
    code = ExitCode.INPUT_UNREADABLE


class LimitExceeded(WorkerError):
    code = ExitCode.LIMIT_EXCEEDED


class StorageRejected(WorkerError):
    """S3 (or the filesystem) refused: missing bucket, wrong credentials, access denied. Not retryable."""

    code = ExitCode.STORAGE_REJECTED


class StorageUnavailable(WorkerError):
    """S3 unreachable, throttled or failing after all retries. Retryable."""

    code = ExitCode.STORAGE_UNAVAILABLE


class PeerFailed(WorkerError):
    code = ExitCode.PEER_FAILED


class Interrupted(WorkerError):
    code = ExitCode.INTERRUPTED


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def classify(exc: BaseException, *, rank: int | None = None, ts: float = 0.0) -> Failure:
    """Map any exception to a Failure (exit code and one-line message), importing nothing heavy."""
    if isinstance(exc, WorkerError):
        return Failure(int(exc.code), exc.message, rank, ts)
    mro = {cls.__module__ + "." + cls.__name__ for cls in type(exc).__mro__}
    name = type(exc).__name__
    if "asyncdiff.errors.PeerError" in mro:
        return Failure(int(ExitCode.PEER_FAILED), f"{name}: {_first_line(exc)}", rank, ts)
    if "asyncdiff.errors.ConfigError" in mro:
        return Failure(int(ExitCode.INVALID_SPEC), f"AsyncDiff rejected the job: {_first_line(exc)}", rank, ts)
    if isinstance(exc, MemoryError) or "torch.OutOfMemoryError" in mro or name == "OutOfMemoryError":
        return Failure(int(ExitCode.OUT_OF_MEMORY), f"out of memory: {_first_line(exc)}", rank, ts)
    if isinstance(exc, KeyboardInterrupt):
        return Failure(int(ExitCode.INTERRUPTED), "interrupted", rank, ts)
    text = str(exc)
    if name in ("DistBackendError", "DistNetworkError", "DistError") or any(
        marker in text for marker in ("Connection closed by peer", "Connection reset by peer", "[gloo]", "NCCL")
    ):
        return Failure(int(ExitCode.PEER_FAILED), f"{name}: {_first_line(exc)}", rank, ts)
    return Failure(int(ExitCode.UNEXPECTED), f"{name}: {_first_line(exc)}", rank, ts)
