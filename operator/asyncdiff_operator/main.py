"""``asyncdiff-operator``: run the kopf operator with our settings.

Why a wrapper around ``kopf run``: the settings that keep jobs from getting stuck belong to the product, not to each
deployment's command line: watch timeouts (a silently dead stream is reopened), client request timeouts, our own
finalizer and annotation prefix, Events only from our explicit transitions (not one per timer tick), no peering by
default (run one replica with ``strategy: Recreate``; ``--peering`` for kopf's peering objects). ``--namespace``
limits it to namespaces (repeatable); the default is cluster-wide. ``--metrics-port`` serves Prometheus metrics,
``--liveness`` kopf's liveness endpoint, ``--log-format json`` one JSON object per log line (structured logs).
Every flag has an environment variable for container specs: ASYNCDIFF_NAMESPACES (comma-separated),
ASYNCDIFF_METRICS_PORT, ASYNCDIFF_LIVENESS, ASYNCDIFF_LOG_FORMAT. The job defaults and reconcile settings
(ASYNCDIFF_WORKER_IMAGE, ASYNCDIFF_S3_*, ...) are parsed by ``settings.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import kopf

from asyncdiff_operator import metrics
from asyncdiff_operator.settings import SettingsError

try:
    import asyncdiff_operator.handlers  # noqa: F401  (registers the handlers; parses the settings from the environment)
except SettingsError as exc:  # a bad setting stops the operator at start-up, with the variable's name
    raise SystemExit(f"asyncdiff-operator: invalid setting: {exc}") from None

PREFIX = "asyncdiff.io"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    if hasattr(settings.watching, "inactivity_timeout"):
        settings.watching.inactivity_timeout = 120  # a stream with no events or bookmarks for 2 min is reopened
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # A timer tick that deletes its own job (TTL) or runs while the job is deleted is still "exiting" when kopf
    # handles the deletion; kopf then re-checks after cancellation_polling (default 60 s) before it removes its
    # finalizer, and the job hangs in deletion that long (kopf#1305-like). Poll every second instead.
    settings.background.cancellation_polling = 1.0
    settings.background.instant_exit_timeout = 0.1
    settings.posting.level = logging.WARNING  # handler-success lines are not Events; our transitions are
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX)


class _QuietTimers(logging.Filter):
    """Drop kopf's "Timer 'on_timer' succeeded." line: one per job per second says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timer 'on_timer' succeeded")


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="asyncdiff-operator", description=__doc__.splitlines()[0] if __doc__ else "")
    namespaces = [n for n in env("ASYNCDIFF_NAMESPACES", "").split(",") if n]
    parser.add_argument("--namespace", "-n", action="append", default=namespaces, help="watch only these")
    parser.add_argument("--peering", action="store_true", help="use kopf peering (default: standalone)")
    parser.add_argument("--liveness", default=env("ASYNCDIFF_LIVENESS"), help="e.g. http://0.0.0.0:8080/healthz")
    port = env("ASYNCDIFF_METRICS_PORT")
    parser.add_argument("--metrics-port", type=int, default=int(port) if port else None, help="Prometheus /metrics")
    parser.add_argument("--log-format", choices=["plain", "full", "json"], default=env("ASYNCDIFF_LOG_FORMAT", "full"))
    parser.add_argument("--verbose", action="store_true", help="debug logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log_format = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
    kopf.configure(verbose=args.verbose, log_format=log_format[args.log_format], log_refkey="object")
    logging.getLogger("kopf.objects").addFilter(_QuietTimers())
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port)
    kopf.run(
        standalone=not args.peering,
        clusterwide=not args.namespace,
        namespaces=list(args.namespace),
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
