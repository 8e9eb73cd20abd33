"""One Pod's lifecycle on the process kubelet: volumes, init containers, containers, restarts, stop.

Why: this is where Pod semantics become processes: phases Pending -> Running -> Succeeded/Failed,
``restartPolicy`` with back-off (``CrashLoopBackOff``), exit codes (128+signal when killed), termination
messages, ``activeDeadlineSeconds``, and deletion sending SIGTERM to each container's process group,
then SIGKILL after the grace period. Status is written through the API's ``pods/status`` like a kubelet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..apiserver.api import now_rfc3339, parse_time
from ..errors import ApiError
from . import networking
from .env import EnvError, build_env, expand
from .logs import ContainerLog
from .volumes import Lookup, PathRewriter, VolumeError, container_mounts, materialize

if TYPE_CHECKING:
    from .kubelet import Kubelet

log = logging.getLogger("asyncdiff_devcluster.kubelet")
PODS = ("", "pods")
MAX_MESSAGE = 4096
MOUNT_EVENT_EVERY = 5
"""A failing volume mount is retried every second; its FailedMount event is posted again every this many tries."""


@dataclass
class ContainerRun:
    spec: dict[str, Any]
    init: bool
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    log: ContainerLog | None = None
    ready: bool = False
    started: bool = False
    termination_file: Path | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": f"devcluster://{self.spec.get('image', '')}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            out["containerID"] = f"devcluster://{self.proc.pid}"
        return out


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.kubelet = kubelet
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta.get("namespace", "")
        self.name: str = meta["name"]
        self.dir = kubelet.pods_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        spec = pod.get("spec") or {}
        self.init = [ContainerRun(c, True) for c in spec.get("initContainers") or []]
        self.main = [ContainerRun(c, False) for c in spec.get("containers") or []]
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.initialized = not self.init
        self.terminating = asyncio.Event()
        self.grace = float(spec.get("terminationGracePeriodSeconds", 30))
        self.start_time = now_rfc3339()
        self.started_monotonic = time.monotonic()
        self.volumes: dict[str, Path] = {}
        self.port_map: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None
        self.gpu_ids: list[int] = []

    # ------------------------------------------------------------------ control from the kubelet

    def start(self) -> None:
        self.task = asyncio.create_task(self._main(), name=f"pod-{self.namespace}/{self.name}")

    def observe(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.terminating.is_set():
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            self.request_stop(float(grace) if grace is not None else self.grace)

    def request_stop(self, grace: float) -> None:
        self.grace = grace
        self.terminating.set()
        for run in self.init + self.main:
            self._signal(run, signal.SIGTERM)
        asyncio.get_running_loop().call_later(max(grace, 0.0), self._kill_all)

    def _kill_all(self) -> None:
        for run in self.init + self.main:
            self._signal(run, signal.SIGKILL)

    def _signal(self, run: ContainerRun, sig: int) -> None:
        proc = run.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    # ------------------------------------------------------------------ status

    def _status(self) -> dict[str, Any]:
        stored = self.kubelet.api.store.get(PODS, self.namespace, self.name)
        old = (stored or {}).get("status") or {}
        status: dict[str, Any] = {k: v for k, v in old.items() if k in ("qosClass", "nominatedNodeName")}
        status["phase"] = self.phase
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        status["hostIP"] = networking.LOOPBACK
        status["hostIPs"] = [{"ip": networking.LOOPBACK}]
        status["podIP"] = networking.LOOPBACK
        status["podIPs"] = [{"ip": networking.LOOPBACK}]
        status["startTime"] = self.start_time
        running_ok = all(r.ready for r in self.main) and self.phase == "Running"
        kubelet_conds = {
            "PodReadyToStartContainers": "True",
            "Initialized": "True" if self.initialized else "False",
            "Ready": "True" if running_ok else "False",
            "ContainersReady": "True" if running_ok else "False",
            "PodScheduled": "True",
        }
        conditions = []
        seen = set()
        for cond in old.get("conditions") or []:
            ctype = cond.get("type")
            if ctype in kubelet_conds:
                value = kubelet_conds[ctype]
                new = dict(cond)
                if new.get("status") != value:
                    new["lastTransitionTime"] = now_rfc3339()
                new["status"] = value
                if value == "True":
                    new.pop("reason", None)
                    new.pop("message", None)
                conditions.append(new)
                seen.add(ctype)
            else:
                conditions.append(cond)
        for ctype, value in kubelet_conds.items():
            if ctype not in seen:
                conditions.append(
                    {
                        "type": ctype,
                        "status": value,
                        "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(),
                    }
                )
        status["conditions"] = conditions
        if self.init:
            status["initContainerStatuses"] = [r.status() for r in self.init]
        status["containerStatuses"] = [r.status() for r in self.main]
        return status

    def publish(self) -> None:
        stored = self.kubelet.api.store.get(PODS, self.namespace, self.name)
        if stored is None or stored["metadata"].get("uid") != self.uid:
            return
        status = self._status()
        if status == stored.get("status"):
            return
        fresh = dict(stored)
        fresh["status"] = status
        try:
            self.kubelet.api.update(
                self.kubelet.api.rt("v1", "pods"), self.namespace, self.name, fresh, subresource="status"
            )
        except ApiError as exc:
            if exc.code != 404:
                log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, exc.message)

    # ------------------------------------------------------------------ lifecycle

    async def _main(self) -> None:
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            self._kill_all()
            raise
        except Exception:
            log.exception("pod %s/%s: kubelet worker crashed", self.namespace, self.name)
            self._kill_all()
        finally:
            self.kubelet.worker_done(self)

    async def _wait_or_stop(self, seconds: float) -> bool:
        """Sleep; True when the pod is being stopped instead."""
        try:
            await asyncio.wait_for(self.terminating.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def _lifecycle(self) -> None:
        self.publish()
        lookup = Lookup(self.kubelet.api.store.get, self.namespace)
        tries = 0
        while not self.terminating.is_set():
            try:
                self.volumes = materialize(self.pod, self.dir, lookup, self.kubelet.state_dir)
                break
            except VolumeError as exc:
                # As a kubelet: the containers wait in ContainerCreating (no message there); the reason is only
                # in the FailedMount Warning Event, repeated while it lasts (aggregated into one with a count).
                for run in self.init + self.main:
                    run.state = {"waiting": {"reason": "ContainerCreating"}}
                self.publish()
                if tries % MOUNT_EVENT_EVERY == 0:
                    message = f'MountVolume.SetUp failed for volume "{exc.volume}" : {exc}'
                    ref = {"apiVersion": "v1", "kind": "Pod", "metadata": self.pod["metadata"]}
                    self.kubelet.api.record_event(ref, "FailedMount", message, type_="Warning", component="kubelet")
                tries += 1
                await self._wait_or_stop(1.0)
        deadline_task = None
        deadline = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None:
            deadline_task = asyncio.create_task(self._deadline(float(deadline)))
        try:
            for run in self.init:
                ok = await self._run_init(run)
                if not ok:
                    break
            else:
                self.initialized = True
                if not self.terminating.is_set():
                    await asyncio.gather(*(self._supervise(run) for run in self.main))
        finally:
            if deadline_task is not None:
                deadline_task.cancel()
        self._final_phase()
        self.publish()
        if self.terminating.is_set() and self.reason != "DeadlineExceeded":
            with contextlib.suppress(ApiError):
                self.kubelet.api.delete(
                    self.kubelet.api.rt("v1", "pods"), self.namespace, self.name, {"gracePeriodSeconds": 0}
                )

    async def _deadline(self, seconds: float) -> None:
        start = parse_time(self.start_time) or time.time()
        await asyncio.sleep(max(0.0, start + seconds - time.time()))
        self.reason = "DeadlineExceeded"
        self.message = "Pod was active on the node longer than the specified deadline"
        self.request_stop(float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)))

    def _final_phase(self) -> None:
        if self.reason == "DeadlineExceeded":
            self.phase = "Failed"
            return
        runs = self.main if self.initialized else self.init
        codes = [((r.state.get("terminated") or {}).get("exitCode")) for r in runs]
        if not self.initialized:
            self.phase = "Failed"
        elif all(c == 0 for c in codes):
            self.phase = "Succeeded"
        else:
            self.phase = "Failed"

    def _policy(self) -> str:
        return str((self.pod.get("spec") or {}).get("restartPolicy", "Always"))

    async def _run_init(self, run: ContainerRun) -> bool:
        while True:
            code = await self._run_once(run)
            if code is None or self.terminating.is_set():
                return False
            if code == 0:
                return True
            if self._policy() == "Never":
                return False
            if not await self._backoff(run):
                return False

    async def _supervise(self, run: ContainerRun) -> None:
        while True:
            code = await self._run_once(run)
            if code is None or self.terminating.is_set():
                return
            policy = self._policy()
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                if not await self._backoff(run):
                    return
                continue
            self._maybe_finish()
            return

    def _maybe_finish(self) -> None:
        if all("terminated" in r.state for r in self.main):
            self._final_phase()
            self.publish()

    async def _backoff(self, run: ContainerRun) -> bool:
        base = self.kubelet.restart_backoff
        delay = min(base * (2.0 ** min(run.restart_count, 10)), self.kubelet.restart_backoff_max)
        run.last_state = {"terminated": run.state.get("terminated", {})}
        run.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": (
                    f"back-off {delay:g}s restarting failed container={run.name} "
                    f"pod={self.name}_{self.namespace}({self.uid})"
                ),
            }
        }
        run.restart_count += 1
        self.publish()
        return not await self._wait_or_stop(delay)

    # ------------------------------------------------------------------ one container run

    def _environment(self, run: ContainerRun) -> tuple[list[str], dict[str, str], str]:
        kubelet = self.kubelet
        pod = self.kubelet.api.store.get(PODS, self.namespace, self.name) or self.pod
        spec = run.spec
        services = [s["metadata"]["name"] for s in kubelet.api.store.items(("", "services"), self.namespace)]
        cdir = self.dir / "containers" / run.name
        cdir.mkdir(parents=True, exist_ok=True)
        run.termination_file = cdir / "termination-log"
        run.termination_file.write_bytes(b"")
        mounts = container_mounts(spec, self.volumes)
        mounts[str(spec.get("terminationMessagePath", "/dev/termination-log"))] = str(run.termination_file)
        rewrite = PathRewriter(mounts)
        declared_env = build_env(pod, spec, kubelet.api.store.get)
        env = dict(kubelet.base_env)
        pod_spec = pod.get("spec") or {}
        hostname = pod_spec.get("hostname") or self.name
        env.update(
            {
                "HOSTNAME": hostname,
                "KUBERNETES_SERVICE_HOST": networking.LOOPBACK,
                "KUBERNETES_SERVICE_PORT": str(kubelet.api_port),
                "ASYNCDIFF_POD_DIR": str(self.dir),
                "ASYNCDIFF_TERMINATION_LOG": str(run.termination_file),
                "ASYNCDIFF_MOUNTS": rewrite.env(),
            }
        )
        if kubelet.kubeconfig:
            env["KUBECONFIG"] = str(kubelet.kubeconfig)
        owner = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
        group = str((owner or {}).get("uid") or self.uid)
        declared_ports = {int(p["containerPort"]) for p in spec.get("ports") or [] if "containerPort" in p}
        for port in sorted(declared_ports):
            host_port = kubelet.ports.port_for(self.namespace, group, port)
            self.port_map[str(port)] = host_port
            env[f"ASYNCDIFF_PORT_{port}"] = str(host_port)
        for key, value in declared_env.items():
            if networking.is_port_variable(key, value, declared_ports):
                host_port = kubelet.ports.port_for(self.namespace, group, int(value))
                self.port_map[value] = host_port
                value = str(host_port)
            value = networking.rewrite_service_value(value, self.namespace, services)
            value = networking.rewrite_cluster_names(value)
            env[key] = rewrite(value)
        if self.gpu_ids and kubelet.gpu_passthrough:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in self.gpu_ids)
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        if self.gpu_ids:
            env["ASYNCDIFF_FAKE_GPU_IDS"] = ",".join(str(i) for i in self.gpu_ids)
        command = [expand(str(a), declared_env) for a in spec.get("command") or []]
        args = [expand(str(a), declared_env) for a in spec.get("args") or []]
        argv = [rewrite(networking.rewrite_cluster_names(a)) for a in command + args]
        workdir = spec.get("workingDir")
        cwd = rewrite(str(workdir)) if workdir else str(self.dir / "workdir")
        Path(cwd).mkdir(parents=True, exist_ok=True)
        if not command:
            raise EnvError(
                "the dev cluster runs container commands as local processes and cannot run an image's "
                f"entrypoint: set spec.containers[].command for container {run.name!r}"
            )
        return argv, env, cwd

    async def _run_once(self, run: ContainerRun) -> int | None:
        """Start the container and wait for it; its exit code, or None if the pod stopped first."""
        while True:
            if self.terminating.is_set():
                return None
            try:
                argv, env, cwd = self._environment(run)
                break
            except EnvError as exc:
                run.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                self.publish()
                if await self._wait_or_stop(1.0):
                    return None
        self.kubelet.annotate_ports(self)
        run.log = ContainerLog(self.dir / "logs" / run.name / f"{run.restart_count}.log")
        started = now_rfc3339()
        try:
            run.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            run.log.write(f"failed to start {shlex.join(argv)}: {exc}\n".encode())
            run.log.close()
            run.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": f"failed to create containerd task: exec: {argv[0]!r}: {exc.strerror}",
                    "startedAt": started,
                    "finishedAt": now_rfc3339(),
                }
            }
            self.publish()
            return 128
        run.state = {"running": {"startedAt": started}}
        run.started = True
        run.ready = not run.init
        restarted = any(r.restart_count for r in self.main)
        if not run.init and (all("running" in r.state for r in self.main) or restarted):
            self.phase = "Running"
        self.publish()
        self.kubelet.record_start(self)
        assert run.proc.stdout is not None
        reader = asyncio.create_task(self._pump(run.proc.stdout, run.log))
        code = await run.proc.wait()
        # like a container runtime, nothing of the container outlives its main process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(reader, 5.0)
        except TimeoutError:
            reader.cancel()
        run.log.close()
        exit_code = code if code >= 0 else 128 - code
        message = ""
        try:
            message = (
                run.termination_file.read_bytes()[:MAX_MESSAGE].decode(errors="replace") if run.termination_file else ""
            )
        except OSError:
            message = ""
        if not message and exit_code != 0 and run.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = run.log.tail_text()
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now_rfc3339(),
            "containerID": f"devcluster://{run.proc.pid}",
        }
        if code < 0:
            terminated["signal"] = -code
        if message:
            terminated["message"] = message
        run.state = {"terminated": terminated}
        run.ready = False
        self.publish()
        return exit_code

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, log_file: ContainerLog) -> None:
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                return
            log_file.write(chunk)
