"""Background uploads on rank 0, so storing output i overlaps with generating output i+1.

Why a thread: every rank denoises in lock step, so an upload done inline on rank 0 would stall all ranks for the
upload's duration (and its retries). One worker thread keeps the order simple; the first failure is remembered and
re-raised in the main thread at the next check, which stops the job with the storage error's exit code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from asyncdiff_worker.spec.uris import Location
from asyncdiff_worker.storage import PutResult, Storage


class Uploader:
    def __init__(self, storage: Storage, workers: int = 1) -> None:
        self.storage = storage
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asyncdiff-upload")
        self._futures: list[Future[PutResult]] = []
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def submit(
        self,
        location: Location,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        on_done: Callable[[PutResult], None] | None = None,
    ) -> Future[PutResult]:
        self.raise_if_failed()

        def task() -> PutResult:
            if self._error is not None:  # do not hammer a failed store
                raise self._error
            try:
                result = self.storage.put(location, data, content_type=content_type, metadata=metadata)
            except BaseException as exc:
                with self._lock:
                    if self._error is None:
                        self._error = exc
                raise
            if on_done is not None:
                on_done(result)
            return result

        future = self._pool.submit(task)
        self._futures.append(future)
        return future

    def raise_if_failed(self) -> None:
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def wait(self) -> list[PutResult]:
        """Wait for every upload; raise the first failure."""
        results = []
        for future in self._futures:
            try:
                results.append(future.result())
            except BaseException:
                self.raise_if_failed()
                raise
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
