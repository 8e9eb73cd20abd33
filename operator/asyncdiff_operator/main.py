"""``asyncdiff-operator``: run the kopf operator with our settings.

Why a wrapper around ``kopf run``: the settings that keep jobs from getting stuck (watch timeouts so a silently
dead stream is reopened, status-based progress storage, no peering by default) belong to the product, not to each
deployment's command line. ``--namespace`` limits it to namespaces; the default is cluster-wide.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import kopf

import asyncdiff_operator.handlers  # noqa: F401  (registers the handlers)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = "asyncdiff.io/finalizer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asyncdiff-operator", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only these (repeatable)")
    parser.add_argument("--peering", action="store_true", help="use kopf peering (default: standalone)")
    parser.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    kopf.run(
        standalone=not args.peering,
        clusterwide=not args.namespace,
        namespaces=list(args.namespace),
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
