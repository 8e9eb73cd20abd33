"""Exit codes: the table, the classification of exceptions, the termination log and the root cause."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncdiff.errors import ConfigError, PeerError
from asyncdiff_worker import errors
from asyncdiff_worker.exit_codes import (
    RETRYABLE_CODES,
    USER_ERROR_CODES,
    ExitCode,
    Failure,
    is_retryable,
    read_exit_records,
    reason_for,
    root_cause,
    write_exit_record,
    write_termination_log,
)


def test_table_separates_user_errors_from_infrastructure() -> None:
    assert {10, 11, 12, 13, 14, 15, 16, 17} == USER_ERROR_CODES
    assert {20, 21, 22, 24} == RETRYABLE_CODES
    assert not USER_ERROR_CODES & RETRYABLE_CODES
    assert all(not is_retryable(c) for c in USER_ERROR_CODES)
    assert is_retryable(1) and is_retryable(137) and not is_retryable(0)
    assert reason_for(137) == "Crashed"
    assert len({reason_for(c) for c in ExitCode}) == len(ExitCode)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.SpecError(["spec.x: bad"]), 10),
        (errors.ModelNotFound("m"), 11),
        (errors.ModelCorrupt("m"), 12),
        (errors.Unsupported("m"), 13),
        (errors.InputUnreadable("m"), 14),
        (errors.LimitExceeded("m"), 15),
        (errors.StorageRejected("m"), 16),
        (MemoryError(), 17),
        (errors.StorageUnavailable("m"), 20),
        (PeerError("rank 1 died"), 21),
        (RuntimeError("[gloo] Connection closed by peer"), 21),
        (ConfigError("model_n", 5, "one of 2, 3, 4"), 10),
        (KeyError("x"), 22),
        (KeyboardInterrupt(), 24),
    ],
)
def test_classify(exc: BaseException, code: int) -> None:
    failure = errors.classify(exc)
    assert failure.code == code
    assert "\n" not in failure.line()


def test_failure_line() -> None:
    line = Failure(11, "spec.model.source: /m: does not exist").line()
    assert line == "ModelNotFound (exit 11, not retryable): spec.model.source: /m: does not exist"
    assert Failure(20, "x\ny").line() == "StorageUnavailable (exit 20, retryable): x y"


def test_termination_log_first_failure_wins_launcher_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("ASYNCDIFF_TERMINATION_LOG", str(log))
    write_termination_log(Failure(12, "first"))
    write_termination_log(Failure(21, "second"))
    assert log.read_text() == "ModelCorrupt (exit 12, not retryable): first\n"
    write_termination_log(Failure(20, "root"), overwrite=True)
    assert log.read_text() == "StorageUnavailable (exit 20, retryable): root\n"


def test_exit_records_and_root_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCDIFF_EXIT_DIR", str(tmp_path))
    write_exit_record(Failure(21, "peer gone", rank=1, ts=1.0))
    write_exit_record(Failure(20, "s3 down", rank=0, ts=2.0))
    records = read_exit_records(tmp_path)
    assert [r.code for r in records] == [21, 20]
    cause = root_cause(records)
    assert cause is not None and cause.code == 20 and cause.rank == 0
    assert root_cause([Failure(24, "term", ts=2.0), Failure(21, "peer", ts=1.0)]).code == 21  # type: ignore[union-attr]
    assert root_cause([]) is None
