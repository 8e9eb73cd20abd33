"""``asyncdiff dev-cluster up|down|status|kubeconfig``: run the local control plane from a shell.

Why: a user (and ``make demo``) needs one command that prints a kubeconfig path, after which
``KUBECONFIG=<path> kubectl get pods`` works. ``up`` runs in the foreground until Ctrl-C/SIGTERM, or with
``--detach`` as a background process; either way the state dir holds ``pid``, ``state.json``,
``kubeconfig``, ``server.log`` (detached) and the per-pod folders. ``down`` stops it (SIGTERM, then
SIGKILL after ``--timeout``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .cluster import DevCluster, DevClusterConfig

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def default_state_dir() -> Path:
    env = os.environ.get("ASYNCDIFF_DEVCLUSTER_HOME")
    return Path(env) if env else Path.home() / ".asyncdiff" / "dev-cluster"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncdiff dev-cluster", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the dev cluster and print its kubeconfig path")
    up.add_argument("--state-dir", type=Path, default=None, help="state folder (default ~/.asyncdiff/dev-cluster)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=0, help="API port (default: a free port)")
    up.add_argument("--gpus", type=int, default=8, help="fake nvidia.com/gpu capacity of the node")
    up.add_argument("--gpu-passthrough", action="store_true", help="give GPU pods real CUDA_VISIBLE_DEVICES ids")
    up.add_argument("--job-backoff", type=float, default=1.0, help="Job pod re-creation back-off base, seconds")
    up.add_argument("--restart-backoff", type=float, default=1.0, help="container restart back-off base, seconds")
    up.add_argument("--snapshot", type=Path, default=None, help="load objects from / save them to this JSON file")
    up.add_argument("--keep-pod-dirs", action="store_true", help="keep per-pod folders after pods are deleted")
    up.add_argument("--detach", action="store_true", help="run in the background and return once ready")
    up.add_argument("--startup-timeout", type=float, default=30.0)
    up.add_argument("--log-level", default="INFO")
    for name, help_ in (
        ("down", "stop a running dev cluster"),
        ("status", "say whether it runs"),
        ("kubeconfig", "print the kubeconfig path"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--state-dir", type=Path, default=None)
        if name == "down":
            p.add_argument("--timeout", type=float, default=30.0)
    return parser


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_state(state_dir: Path) -> dict[str, object] | None:
    path = state_dir / "state.json"
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return state


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _up_foreground(args: argparse.Namespace, state_dir: Path) -> int:
    config = DevClusterConfig(
        state_dir=state_dir,
        host=args.host,
        port=args.port,
        gpus=args.gpus,
        gpu_passthrough=args.gpu_passthrough,
        job_backoff_base=args.job_backoff,
        restart_backoff=args.restart_backoff,
        snapshot=args.snapshot,
        keep_pod_dirs=args.keep_pod_dirs,
    )

    async def run() -> None:
        cluster = DevCluster(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await cluster.start()
        state = {
            "pid": os.getpid(),
            "url": cluster.url,
            "kubeconfig": str(cluster.kubeconfig),
            "started": time.time(),
        }
        (state_dir / "state.json").write_text(json.dumps(state))
        (state_dir / "pid").write_text(str(os.getpid()))
        print(cluster.kubeconfig, flush=True)
        print(
            f"dev cluster on {cluster.url}; export KUBECONFIG={cluster.kubeconfig}",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await cluster.stop()
            for name in ("state.json", "pid"):
                with contextlib.suppress(OSError):
                    (state_dir / name).unlink()

    asyncio.run(run())
    return 0


def _up_detached(args: argparse.Namespace, argv: list[str], state_dir: Path) -> int:
    child_argv = [a for a in argv if a != "--detach"]
    if "--state-dir" not in child_argv:
        child_argv += ["--state-dir", str(state_dir)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH", "")]))
    with contextlib.suppress(OSError):
        (state_dir / "state.json").unlink()
    log_file = (state_dir / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncdiff_devcluster", *child_argv],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
        env=env,
    )
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        state = _read_state(state_dir)
        if state is not None and state.get("pid") == proc.pid and _ready(str(state["url"])):
            print(state["kubeconfig"])
            print(
                f"dev cluster on {state['url']} (pid {proc.pid}); logs in {state_dir / 'server.log'}",
                file=sys.stderr,
            )
            return 0
        if proc.poll() is not None:
            print(f"dev cluster exited with {proc.returncode}; see {state_dir / 'server.log'}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    proc.terminate()
    print(
        f"dev cluster did not become ready in {args.startup_timeout:g}s; see {state_dir / 'server.log'}",
        file=sys.stderr,
    )
    return 1


def _down(state_dir: Path, timeout: float) -> int:
    state = _read_state(state_dir)
    if state is None:
        print("dev cluster is not running", file=sys.stderr)
        return 0
    pid = int(str(state["pid"]))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        print(f"dev cluster (pid {pid}) did not stop in {timeout:g}s; killed", file=sys.stderr)
    for name in ("state.json", "pid"):
        with contextlib.suppress(OSError):
            (state_dir / name).unlink()
    print(f"dev cluster (pid {pid}) stopped", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    state_dir: Path = (args.state_dir or default_state_dir()).resolve()
    if args.command == "up":
        logging.basicConfig(
            level=getattr(logging, str(args.log_level).upper(), logging.INFO),
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )
        state_dir.mkdir(parents=True, exist_ok=True)
        running = _read_state(state_dir)
        if running is not None:
            print(running["kubeconfig"])
            print(f"dev cluster already running on {running['url']} (pid {running['pid']})", file=sys.stderr)
            return 0 if args.detach else 1
        if args.detach:
            return _up_detached(args, argv, state_dir)
        return _up_foreground(args, state_dir)
    if args.command == "down":
        return _down(state_dir, args.timeout)
    state = _read_state(state_dir)
    if args.command == "status":
        if state is None:
            print("not running")
            return 3
        print(f"running on {state['url']} (pid {state['pid']}); kubeconfig {state['kubeconfig']}")
        return 0
    kubeconfig = state_dir / "kubeconfig"
    if state is None and not kubeconfig.exists():
        print("dev cluster is not running", file=sys.stderr)
        return 1
    print(kubeconfig)
    return 0
