"""``asyncdiff submit | status | fetch``: a small user CLI for AsyncDiffJobs, in the kubectl spirit.

Why a CLI besides kubectl: following a job (a progress bar until a terminal phase, then the reason or the outputs)
and downloading outputs listed in the result manifest are what users do after every submit, and neither is one
kubectl command. It talks to the cluster through the kubernetes client and the current kubeconfig (``KUBECONFIG``
or ``--kubeconfig``), never imports torch, and reads outputs with the worker's storage layer (``file://`` or
``s3://`` with the job's endpoint settings; S3 credentials from the environment or ``ASYNCDIFF_S3_SECRET_DIR``).

Exit codes: 0 Succeeded (or submitted with ``--no-follow``), 1 Failed (or its outputs cannot be read), 2 usage or
API errors, 3 timed out, 4 no operator picked the job up (``--pickup-timeout``). Every error is one line on stderr,
``asyncdiff <command>: <what is wrong and what to do>``, never a traceback (``ASYNCDIFF_DEBUG=1`` adds it): no
kubeconfig, an unreachable API server, the CRD not installed, a job that does not exist, S3 refusing or no
credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

import yaml

from asyncdiff_operator import reasons
from asyncdiff_operator.api import GROUP, KIND, PLURAL, VERSION

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_NO_OPERATOR = 1, 2, 3, 4
PICKUP_TIMEOUT_S = 15.0
"""How long ``submit`` waits for an operator to write the job's first status before it says none is running."""

_NO_KUBECONFIG = (
    "no cluster configured: set KUBECONFIG or pass --kubeconfig (for the local control plane: "
    "export KUBECONFIG=$(asyncdiff dev-cluster up --detach))"
)
_NO_CRD = (
    f"the {KIND} CRD is not installed in this cluster: kubectl apply -f crds/{GROUP}_{PLURAL}.yaml, or install the "
    "Helm chart (charts/asyncdiff-operator)"
)


class CLIError(Exception):
    """An error shown as one line (``asyncdiff <command>: <message>``) with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _api(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig:
        if not Path(kubeconfig).is_file():
            raise CLIError(f"--kubeconfig {kubeconfig}: no such file")
        try:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except config.ConfigException as exc:
            raise CLIError(f"--kubeconfig {kubeconfig}: {_first_line(exc)}") from exc
    else:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException as exc:
                raise CLIError(_NO_KUBECONFIG) from exc
    return client.CustomObjectsApi(client.ApiClient())


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _api_error(exc: Any, namespace: str, name: str | None = None) -> CLIError:
    """A clear message for an ApiException: the job or the CRD missing, forbidden, or the server's own message."""
    details: dict[str, Any] = {}
    try:
        body = json.loads(exc.body)
        details = body.get("details") or {}
    except (TypeError, ValueError, AttributeError):
        body = None
    if exc.status == 404:
        if details.get("kind") == "namespaces":
            return CLIError(f'namespace "{details.get("name") or namespace}" not found (kubectl create namespace ...)')
        if name is not None and details.get("name") == name:
            return CLIError(f'{KIND} "{name}" not found in namespace "{namespace}" (kubectl get adj -n {namespace})')
        return CLIError(_NO_CRD)
    if exc.status in (401, 403):
        return CLIError(f"the API server refused the request ({exc.status}): {_reason(exc)}")
    return CLIError(_reason(exc))


def _namespace(given: str | None, manifest: dict[str, Any] | None = None) -> str:
    if given:
        return given
    if manifest and (manifest.get("metadata") or {}).get("namespace"):
        return str(manifest["metadata"]["namespace"])
    try:
        from kubernetes import config

        _, context = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        return str((context or {}).get("context", {}).get("namespace") or "default")
    except Exception:
        return "default"


def _get(api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        raise _api_error(exc, namespace, name) from exc
    return obj


def picked_up(obj: dict[str, Any]) -> bool:
    """Whether an operator has acted on the job (it writes a phase on its first reconcile)."""
    status = obj.get("status") or {}
    return bool(status.get("phase") or status.get("observedGeneration") or status.get("attempts"))


def _bar(progress: dict[str, Any], width: int = 30) -> str:
    total, done = int(progress.get("outputsTotal") or 0), int(progress.get("outputsDone") or 0)
    steps, step = int(progress.get("steps") or 0), int(progress.get("step") or 0)
    frac = min(1.0, (done + (step / steps if steps else 0.0)) / total) if total else 0.0
    filled = round(frac * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} outputs, step {step}/{steps}"


def status_line(obj: dict[str, Any]) -> str:
    """One line: phase, attempt, progress, and the reason of the last failure."""
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    parts = [f"{obj['metadata']['name']}: {phase}", f"attempt {status.get('attempts') or 0}"]
    if status.get("progress"):
        parts.append(_bar(status["progress"]))
    failure = status.get("lastFailure")
    if failure and phase != reasons.SUCCEEDED:
        parts.append(f"last failure {failure.get('reason')}: {str(failure.get('message', ''))[:200]}")
    return "  ".join(parts)


def follow(
    api: Any,
    namespace: str,
    name: str,
    *,
    timeout: float | None,
    out: TextIO,
    interval: float = 1.0,
    pickup_timeout: float | None = None,
) -> int:
    """Print status changes until the job is terminal; the exit code by phase. With ``pickup_timeout``, give up
    (exit 4) when no operator has written the job's status after that many seconds."""
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    last = ""
    tty = out.isatty()
    while True:
        obj = _get(api, namespace, name)
        if pickup_timeout is not None and not picked_up(obj) and time.monotonic() - start > pickup_timeout:
            if tty and last:
                out.write("\n")
            raise CLIError(
                f"no operator has picked up {name} after {pickup_timeout:.0f} s: is asyncdiff-operator running and "
                f"watching namespace {namespace}? The job stays created (kubectl get adj {name} -n {namespace})",
                EXIT_NO_OPERATOR,
            )
        line = status_line(obj)
        if line != last:
            out.write(("\r\x1b[2K" + line) if tty else line + "\n")
            out.flush()
            last = line
        status = obj.get("status") or {}
        if status.get("phase") in reasons.TERMINAL_PHASES:
            if tty:
                out.write("\n")
            for uri in status.get("outputs") or []:
                out.write(f"  {uri}\n")
            if status.get("manifest"):
                out.write(f"  manifest: {status['manifest']}\n")
            return 0 if status["phase"] == reasons.SUCCEEDED else 1
        if deadline is not None and time.monotonic() > deadline:
            out.write(f"\n{name}: still {status.get('phase')} after {timeout} s\n")
            return 3
        time.sleep(interval)


def submit(args: argparse.Namespace, out: TextIO) -> int:
    try:
        docs = [d for d in yaml.safe_load_all(Path(args.file).read_text()) if d]
    except OSError as exc:
        raise CLIError(f"{args.file}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise CLIError(f"{args.file}: not valid YAML: {_first_line(exc)}") from exc
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(jobs) != 1:
        print(f"asyncdiff submit: {args.file} must hold exactly one {KIND} (found {len(jobs)})", file=sys.stderr)
        return 2
    manifest = jobs[0]
    namespace = _namespace(args.namespace, manifest)
    manifest.setdefault("metadata", {})["namespace"] = namespace
    name = manifest["metadata"].get("name")
    api = _api(args.kubeconfig)
    from kubernetes.client.exceptions import ApiException

    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        out.write(f"asyncdiffjob.{GROUP}/{name} created\n")
    except ApiException as exc:
        if exc.status != 409:
            raise _api_error(exc, namespace) from exc
        try:
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": manifest["spec"]})
        except ApiException as exc2:
            print(f"asyncdiff submit: {_reason(exc2)}", file=sys.stderr)
            return 2
        out.write(f"asyncdiffjob.{GROUP}/{name} configured\n")
    if args.no_follow:
        return 0
    return follow(api, namespace, name, timeout=args.timeout, out=out, pickup_timeout=args.pickup_timeout)


def _reason(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc)
    except (TypeError, ValueError):
        return str(exc)


def show_status(args: argparse.Namespace, out: TextIO) -> int:
    api = _api(args.kubeconfig)
    obj = _get(api, _namespace(args.namespace), args.name)
    status = obj.get("status") or {}
    if args.output == "json":
        out.write(json.dumps(status, indent=2) + "\n")
        return 0
    out.write(status_line(obj) + "\n")
    for cond in status.get("conditions") or []:
        out.write(f"  {cond['type']}={cond['status']} {cond.get('reason', '')} {cond.get('message', '')}\n".rstrip())
        out.write("\n")
    for uri in status.get("outputs") or []:
        out.write(f"  {uri}\n")
    return 0


def fetch(args: argparse.Namespace, out: TextIO) -> int:
    """Download the result manifest and every output it lists into DIR."""
    from asyncdiff_worker.spec import OutputSpec
    from asyncdiff_worker.storage import Storage

    api = _api(args.kubeconfig)
    obj = _get(api, _namespace(args.namespace), args.name)
    status = obj.get("status") or {}
    if status.get("phase") != reasons.SUCCEEDED or not status.get("manifest"):
        print(f"asyncdiff fetch: {args.name} has no result manifest (phase {status.get('phase')})", file=sys.stderr)
        return 1
    # status.output: where the worker wrote, with the operator's S3 defaults (the chart's endpoint) filled in.
    location = {**(obj.get("spec") or {}).get("output", {}), **(status.get("output") or {})}
    storage = Storage.for_output(OutputSpec.model_validate(location))
    dest = Path(args.dir)
    dest.mkdir(parents=True, exist_ok=True)
    data = storage.get(status["manifest"])
    (dest / "manifest.json").write_bytes(data)
    manifest = json.loads(data)
    count = 0
    for record in manifest.get("outputs") or []:
        uri = str(record["uri"])
        target = dest / uri.rstrip("/").rsplit("/", 1)[-1]
        storage.download(uri, target)
        out.write(f"{target}\n")
        count += 1
    out.write(f"{count} outputs and manifest.json in {dest}\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asyncdiff", description="Submit and follow AsyncDiffJobs.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", "-n", default=None)
    common.add_argument("--kubeconfig", default=None)
    p = sub.add_parser("submit", parents=[common], help="create (or update) a job and follow it")
    p.add_argument("file")
    p.add_argument("--no-follow", action="store_true", help="return once the job is created")
    p.add_argument("--timeout", type=float, default=None, help="stop following after this many seconds (exit 3)")
    p.add_argument(
        "--pickup-timeout",
        type=float,
        default=PICKUP_TIMEOUT_S,
        help=f"exit 4 when no operator has acted on the job after this many seconds (default {PICKUP_TIMEOUT_S:.0f})",
    )
    p = sub.add_parser("status", parents=[common], help="show a job's status")
    p.add_argument("name")
    p.add_argument("--output", "-o", choices=["text", "json"], default="text")
    p = sub.add_parser("fetch", parents=[common], help="download a job's outputs and manifest")
    p.add_argument("name")
    p.add_argument("dir")
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    stream = out or sys.stdout
    handlers = {"submit": submit, "status": show_status, "fetch": fetch}
    try:
        return handlers[args.command](args, stream)
    except KeyboardInterrupt:
        print(f"asyncdiff {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every error is one line; ASYNCDIFF_DEBUG=1 shows the traceback
        error = _as_cli_error(exc, args)
        if os.environ.get("ASYNCDIFF_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)
        print(f"asyncdiff {args.command}: {error}", file=sys.stderr)
        return error.code


def _as_cli_error(exc: Exception, args: argparse.Namespace) -> CLIError:
    if isinstance(exc, CLIError):
        return exc
    from asyncdiff_worker.errors import WorkerError
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, WorkerError):  # storage: no credentials, access denied, missing object, S3 unreachable
        return CLIError(f"cannot read the outputs: {exc.message}", EXIT_FAILED)
    if isinstance(exc, ApiException):
        return _api_error(exc, _namespace(args.namespace), getattr(args, "name", None))
    if isinstance(exc, HTTPError | ConnectionError):
        from kubernetes import client

        host = client.Configuration.get_default_copy().host
        return CLIError(f"cannot reach the API server at {host}: {_first_line(exc)}")
    if isinstance(exc, OSError):
        return CLIError(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), EXIT_FAILED)
    return CLIError(f"{type(exc).__name__}: {_first_line(exc)}")


if __name__ == "__main__":
    raise SystemExit(main())
