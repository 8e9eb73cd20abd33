"""Chaos run on the local control plane: a batch job of many outputs finishes correctly while things break.

Why: users run long batch jobs on clusters where operators restart, pods get deleted and storage blips. This
measures, end to end with the real operator process, kubelet-run torchrun workers (tiny SD 1.5 on CPU) and an S3
server (moto), what that costs: for ``duration`` seconds the operator is SIGKILLed every 10-20 s (and restarted at
once, as a Deployment would), a random worker pod is deleted every 30 s (``kubectl delete pod``: default grace),
and the S3 server is stopped for 15 s once (connections refused; its data stays). Then the job runs on undisturbed.

Checked: the job ends ``Succeeded`` with every output exactly once (the manifest lists each index once, each listed
object exists, no other object under ``outputs/``) and a complete manifest. Reported:

- **outputs rendered more than once**: the bucket has versioning on, so every upload of an output key is a version;
  versions beyond the first are re-renders that reached storage (renders cut off before their upload are part of
  the time lost instead);
- **time lost**: the chaos job's wall time (create -> Succeeded) minus a calm baseline of the same job run first on
  the same cluster and operator;
- **stuck intervals**: the CR is sampled every 0.25 s; its *fingerprint* is (phase, attempts, outputsDone, step,
  lastProgressTs, the Running condition's status and reason). A healthy attempt changes it at least once per
  progress line (one per second while rendering), so an interval longer than 2 reconcile intervals with an unchanged
  fingerprint, before the job finished, is *stuck*: the user's view of the job did not move. Each is listed with the
  chaos events that overlap it (or precede it by up to the threshold); start-ups (model loading) show up too, named so.

The bookkeeping (``stuck_intervals``, ``attribute``, ``output_report``) is pure and tested in tests/bench.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "asyncdiff.io_asyncdiffjobs.yaml"
CACHE = Path(__file__).resolve().parent / ".cache"
NAMESPACE = "default"
GROUP, VERSION, PLURAL = "asyncdiff.io", "v1alpha1", "asyncdiffjobs"
BUCKET = "chaos-results"
SECRET = "s3-credentials"
JOB_LABEL = "asyncdiff.io/job"
SAMPLE_SECONDS = 0.25


@dataclass(frozen=True)
class Plan:
    duration_s: float
    outputs: int
    steps: int
    kill_every_s: tuple[float, float] = (10.0, 20.0)
    delete_every_s: float = 30.0
    s3_outage_at_s: float = 45.0
    s3_outage_s: float = 15.0
    reconcile_interval_s: float = 1.0
    seed: int = 7


# The job must outlast the chaos: a calm output of the tiny model takes ~0.27 s on 2 cores since single-node jobs
# became Indexed Jobs of shards (48 outputs finished in 18 s, before the chaos had run 30 s).
FULL = Plan(duration_s=180.0, outputs=720, steps=8, s3_outage_at_s=75.0)
QUICK = Plan(duration_s=75.0, outputs=240, steps=6, s3_outage_at_s=40.0)


# ------------------------------------------------------------------------------------------------ bookkeeping


@dataclass(frozen=True)
class Sample:
    """One look at the CR: seconds since the job was created and what its status showed."""

    t: float
    phase: str
    attempts: int = 0
    outputs_done: int = 0
    step: int = 0
    last_progress_ts: float | None = None
    running: str = ""  # the Running condition's "status/reason"

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        return (self.phase, self.attempts, self.outputs_done, self.step, self.last_progress_ts, self.running)

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def sample_of(t: float, cr: dict[str, Any]) -> Sample:
    status = cr.get("status") or {}
    progress = status.get("progress") or {}
    running: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Running"), {})
    last = progress.get("lastProgressTs")
    return Sample(
        t=t,
        phase=str(status.get("phase") or ""),
        attempts=int(status.get("attempts") or 0),
        outputs_done=int(progress.get("outputsDone") or 0),
        step=int(progress.get("step") or 0),
        last_progress_ts=float(last) if isinstance(last, int | float) else None,
        running=f"{running.get('status', '')}/{running.get('reason', '')}" if running else "",
    )


@dataclass(frozen=True)
class Event:
    """A chaos action (or its effect) at ``t`` (seconds since the job was created), lasting until ``until``."""

    t: float
    kind: str  # operator-killed, pod-deleted, no-pod-to-delete, s3-stopped
    detail: str = ""
    until: float | None = None


def stuck_intervals(samples: Sequence[Sample], threshold_s: float) -> list[tuple[float, float]]:
    """Maximal intervals before the job finished in which the fingerprint did not change, longer than the threshold.

    An interval runs from the sample that showed a fingerprint first to the first sample that showed another (or
    the first finished sample, or the last sample while still unfinished).
    """
    out: list[tuple[float, float]] = []
    if not samples:
        return out
    since = samples[0].t
    current = samples[0].fingerprint
    for s in samples[1:]:
        if s.fingerprint != current or s.finished:
            if s.t - since > threshold_s:
                out.append((since, s.t))
            if s.finished:
                return out
            since, current = s.t, s.fingerprint
    if not samples[-1].finished and samples[-1].t - since > threshold_s:
        out.append((since, samples[-1].t))
    return out


def progress_per_attempt(samples: Sequence[Sample]) -> dict[int, int]:
    """The most outputs the CR reported done during each attempt (what a retry without resume renders again)."""
    out: dict[int, int] = {}
    for smp in samples:
        out[smp.attempts] = max(out.get(smp.attempts, 0), smp.outputs_done)
    return out


def changes(samples: Sequence[Sample]) -> list[list[Any]]:
    """The timeline compressed to the samples whose fingerprint changed: [t, phase, attempts, done, step, running]."""
    out: list[list[Any]] = []
    last: tuple[Any, ...] | None = None
    for smp in samples:
        if smp.fingerprint != last:
            out.append([round(smp.t, 2), smp.phase, smp.attempts, smp.outputs_done, smp.step, smp.running])
            last = smp.fingerprint
    return out


def attribute(interval: tuple[float, float], events: Sequence[Event], lead_s: float) -> list[str]:
    """The chaos events that overlap ``interval`` or happened up to ``lead_s`` before it started."""
    start, end = interval
    causes = []
    for e in events:
        e_end = e.until if e.until is not None else e.t
        if e.t <= end and e_end >= start - lead_s:
            causes.append(f"{e.kind}@{e.t:.0f}s" + (f" ({e.detail})" if e.detail else ""))
    return causes


def output_report(
    expected: int, manifest_outputs: Sequence[str], versions: dict[str, int], object_keys: Sequence[str]
) -> dict[str, Any]:
    """Exactly-once check and re-render count.

    ``manifest_outputs``: the keys the manifest lists; ``versions``: upload count per output key (S3 versions);
    ``object_keys``: the current objects under the job's ``outputs/`` prefix.
    """
    listed = list(manifest_outputs)
    unique = set(listed)
    rerendered = {k: n - 1 for k, n in sorted(versions.items()) if n > 1}
    return {
        "expected": expected,
        "in_manifest": len(listed),
        "duplicates_in_manifest": len(listed) - len(unique),
        "missing_objects": sorted(unique - set(object_keys)),
        "extra_objects": sorted(set(object_keys) - unique),
        "exactly_once": len(listed) == expected == len(unique) and set(object_keys) == unique,
        "uploads_total": sum(versions.values()),
        "outputs_rendered_more_than_once": len(rerendered),
        "extra_renders": sum(rerendered.values()),
        "rerendered": rerendered,
    }


def schedule(plan: Plan) -> list[tuple[float, str]]:
    """The chaos actions in time order: (seconds after the job was created, action)."""
    rng = random.Random(plan.seed)
    actions: list[tuple[float, str]] = []
    t = rng.uniform(*plan.kill_every_s)
    while t < plan.duration_s:
        actions.append((t, "kill-operator"))
        t += rng.uniform(*plan.kill_every_s)
    t = plan.delete_every_s
    while t < plan.duration_s:
        actions.append((t, "delete-pod"))
        t += plan.delete_every_s
    actions.append((plan.s3_outage_at_s, "stop-s3"))
    actions.append((plan.s3_outage_at_s + plan.s3_outage_s, "start-s3"))
    return sorted(actions)


# ------------------------------------------------------------------------------------------------ the run


def job_manifest(name: str, model: Path, endpoint: str, plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AsyncDiffJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"family": "sd15", "source": str(model), "dtype": "float32"},
            "parallelism": {"modelN": 2, "stride": 1, "warmUp": 1},
            "generation": {
                "prompts": [f"chaos prompt {i}" for i in range(plan.outputs)],
                "steps": plan.steps,
                "height": 32,
                "width": 32,
                "seed": 1,
            },
            "output": {
                "uri": f"s3://{BUCKET}/runs",
                "format": "png",
                "endpointUrl": endpoint,
                "region": "us-east-1",
                "forcePathStyle": True,
            },
            "runPolicy": {"backoffLimit": 30, "gpusPerNode": 0},
            "pod": {"s3CredentialsSecret": SECRET},
        },
    }


@dataclass
class Operator:
    """The operator process, killed and restarted on demand; its log accumulates across restarts."""

    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _out: Any = field(default=None, repr=False)

    def start(self) -> None:
        if self._out is None:
            self._out = self.log.open("ab")
        cmd = [sys.executable, "-m", "asyncdiff_operator.main"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._out, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None


class Sampler:
    """Samples the CR every 0.25 s in a thread; t is measured from ``t0``."""

    def __init__(self, get: Callable[[], dict[str, Any]], t0: float) -> None:
        self.samples: list[Sample] = []
        self._get, self._t0 = get, t0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a failed read is a missing sample, not a crash
                s = sample_of(time.monotonic() - self._t0, self._get())
                self.samples.append(s)
                if s.finished:
                    return
            self._stop.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _wait_finished(get: Callable[[], dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        cr = get()
        if (cr.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return cr
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {cr['metadata']['name']} not finished in {timeout_s:.0f} s: {cr.get('status')}")
        time.sleep(0.5)


@contextlib.contextmanager
def _environment(tmp: Path, plan: Plan, log: Callable[[str], None]) -> Iterator[tuple[Any, Any, Operator, Path, Any]]:
    from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline
    from asyncdiff_devcluster.testing import running_dev_cluster
    from asyncdiff_worker.embedded_s3 import TEST_CREDENTIALS, start_embedded_s3
    from kubernetes import client

    model = CACHE / "chaos-tiny-sd15"
    if not (model / "model_index.json").is_file():
        log(f"building the tiny SD 1.5 model in {model}")
        build_tiny_pipeline("sd15", model)
    s3 = start_embedded_s3()
    s3.client().create_bucket(Bucket=BUCKET)
    s3.client().put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    operator: Operator | None = None
    try:
        with running_dev_cluster(tmp / "cluster", gpus=4, job_backoff_base=0.0, restart_backoff=0.1) as cluster:
            api = cluster.api_client()
            import yaml

            ext = client.ApiextensionsV1Api(api)
            for doc in yaml.safe_load_all(CRD_FILE.read_text()):
                if doc:
                    ext.create_custom_resource_definition(doc)
            secret: Any = {"metadata": {"name": SECRET}, "stringData": TEST_CREDENTIALS}
            client.CoreV1Api(api).create_namespaced_secret(NAMESPACE, secret)
            # progress sampled every reconcile (the default 10 s sampling, which scales to many jobs, would hold
            # the CR's view still for 10 s at a time, and every such wait would count as stuck)
            env = cluster.env(
                ASYNCDIFF_RECONCILE_INTERVAL=str(plan.reconcile_interval_s),
                ASYNCDIFF_PROGRESS_INTERVAL=str(plan.reconcile_interval_s),
            )
            env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO / "worker"), env["PYTHONPATH"]])
            operator = Operator(env, tmp / "operator.log")
            operator.start()
            yield api, s3, operator, model, cluster
    finally:
        if operator is not None:
            operator.stop()
        with contextlib.suppress(Exception):
            s3.stop()


def run(quick: bool, log: Callable[[str], None] = print, plan: Plan | None = None) -> dict[str, Any]:
    from asyncdiff_worker.embedded_s3 import start_embedded_s3
    from kubernetes import client

    plan = plan or (QUICK if quick else FULL)
    threshold = 2 * plan.reconcile_interval_s
    result: dict[str, Any] = {"plan": asdict(plan), "stuck_threshold_s": threshold}
    with tempfile.TemporaryDirectory(prefix="asyncdiff-chaos-") as tmp_name:
        tmp = Path(tmp_name)
        with _environment(tmp, plan, log) as (api, s3, operator, model, _cluster):
            custom: Any = client.CustomObjectsApi(api)
            core: Any = client.CoreV1Api(api)  # typed as Any: the client's optional fields are always set here
            s3_port = int(s3.endpoint_url.rsplit(":", 1)[1])

            def getter(name: str) -> Callable[[], dict[str, Any]]:
                return lambda: dict(custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name))

            # 1. calm baseline: the same job, nothing broken
            t0 = time.monotonic()
            custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, job_manifest("calm", model, s3.endpoint_url, plan)
            )
            calm = _wait_finished(getter("calm"), 900)
            result["baseline_seconds"] = time.monotonic() - t0
            result["baseline_phase"] = calm["status"]["phase"]
            log(f"  calm baseline: {result['baseline_phase']} in {result['baseline_seconds']:.1f} s")

            # 2. the same job under chaos
            events: list[Event] = []
            rng = random.Random(plan.seed + 1)
            t0 = time.monotonic()
            custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, job_manifest("chaos", model, s3.endpoint_url, plan)
            )
            get = getter("chaos")
            sampler = Sampler(get, t0)
            s3_stopped_at: float | None = None
            try:
                for at, action in schedule(plan):
                    now = time.monotonic() - t0
                    if at > now:
                        time.sleep(at - now)
                    now = time.monotonic() - t0
                    if (get().get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                        events.append(Event(now, "job-finished-before-chaos-ended"))
                        break
                    if action == "kill-operator":
                        operator.kill()
                        operator.start()
                        events.append(Event(now, "operator-killed", f"restart #{operator.starts - 1}"))
                    elif action == "delete-pod":
                        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"{JOB_LABEL}=chaos").items
                        live = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
                        if live:
                            victim = rng.choice(live).metadata.name
                            core.delete_namespaced_pod(victim, NAMESPACE)
                            events.append(Event(now, "pod-deleted", victim))
                        else:
                            events.append(Event(now, "no-pod-to-delete", f"{len(pods)} pods, none Running"))
                    elif action == "stop-s3":
                        s3.stop()
                        s3_stopped_at = now
                    elif action == "start-s3":
                        s3 = start_embedded_s3(s3_port)  # moto keeps its data in this process
                        assert s3_stopped_at is not None
                        events.append(Event(s3_stopped_at, "s3-stopped", f"{now - s3_stopped_at:.1f} s", until=now))
                        s3_stopped_at = None
                # bounded: a job that never finishes is a finding (reported with its open stuck interval), not a hang
                finish_timeout = max(300.0, 4 * result["baseline_seconds"])
                log(
                    f"  chaos over after {time.monotonic() - t0:.0f} s: {len(events)} events; waiting up to "
                    f"{finish_timeout:.0f} s for the job"
                )
                try:
                    final = _wait_finished(get, finish_timeout)
                    finished = True
                except RuntimeError:
                    final, finished = get(), False
                    result["children_at_timeout"] = _children(api, "chaos")
                wall = time.monotonic() - t0
            finally:
                sampler.stop()
                if s3_stopped_at is not None:
                    s3 = start_embedded_s3(s3_port)
            result["events"] = [asdict(e) for e in events]
            result["samples"] = len(sampler.samples)
            status = final["status"]
            result["chaos"] = {
                "finished": finished,
                "phase": status.get("phase"),
                "wall_seconds": wall,
                "attempts": status.get("attempts"),
                "last_failure": status.get("lastFailure"),
                "operator_starts": operator.starts,
                "time_lost_seconds": wall - result["baseline_seconds"] if finished else None,
                "note": ""
                if finished
                else f"not finished {wall:.0f} s after it was created: time lost is unbounded (the job would stay "
                f"{status.get('phase')} forever); see children_at_timeout and the last stuck interval",
            }
            stuck = stuck_intervals(sampler.samples, threshold)
            result["stuck_intervals"] = [
                {"start_s": a, "end_s": b, "seconds": b - a, "causes": attribute((a, b), events, threshold) or ["none"]}
                for a, b in stuck
            ]
            result["stuck_seconds_total"] = sum(b - a for a, b in stuck)
            result["outputs_done_per_attempt"] = progress_per_attempt(sampler.samples)
            result["timeline"] = changes(sampler.samples)
            result["outputs"] = _outputs(s3.client(), "runs/chaos", plan.outputs)
            result["baseline_outputs"] = _outputs(s3.client(), "runs/calm", plan.outputs)
            result["operator_log_tail"] = (tmp / "operator.log").read_text(errors="replace")[-1500:]
    chaos = result["chaos"]
    out = result["outputs"]
    lost = "unbounded" if chaos["time_lost_seconds"] is None else f"{chaos['time_lost_seconds']:.0f} s"
    log(
        f"  chaos job: {chaos['phase']} after {chaos['wall_seconds']:.0f} s "
        f"(baseline {result['baseline_seconds']:.0f} s, lost {lost}), {chaos['attempts']} attempts; "
        f"exactly once: {out.get('exactly_once')},"
        f" manifest complete: {out.get('manifest_complete')}; rendered more than once: "
        f"{out.get('outputs_rendered_more_than_once')}/{plan.outputs}; stuck intervals > {threshold:.0f} s: "
        f"{len(result['stuck_intervals'])} ({result['stuck_seconds_total']:.0f} s)"
    )
    return result


def _outputs(s3: Any, prefix: str, expected: int) -> dict[str, Any]:
    versions: dict[str, int] = {}
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=f"{prefix}/outputs/"):
        for v in page.get("Versions", []):
            versions[v["Key"]] = versions.get(v["Key"], 0) + 1
    objects = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/outputs/")
        for o in page.get("Contents", [])
    ]
    try:
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
    except Exception as exc:  # reported, not raised: a missing manifest is a finding
        report = output_report(expected, [], versions, objects)  # uploads so far, against an empty manifest
        report.update({"manifest_complete": False, "manifest_error": repr(exc), "exactly_once": False})
        return report
    keys = [_key(o) for o in manifest.get("outputs", [])]
    report = output_report(expected, keys, versions, objects)
    indices = sorted(int(o.get("index", -1)) for o in manifest.get("outputs", []))
    report["manifest_complete"] = indices == list(range(expected)) and bool(manifest.get("timings"))
    return report


def _children(api: Any, name: str) -> list[dict[str, Any]]:
    """The CR's child Jobs and their pods, as the operator would see them (for a job that did not finish)."""
    from kubernetes import client

    batch: Any = client.BatchV1Api(api)
    core: Any = client.CoreV1Api(api)
    out: list[dict[str, Any]] = []
    for job in batch.list_namespaced_job(NAMESPACE, label_selector=f"{JOB_LABEL}={name}").items:
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job.metadata.name}").items
        out.append(
            {
                "job": job.metadata.name,
                "conditions": [f"{c.type}={c.status} ({c.reason})" for c in job.status.conditions or []],
                "failed": job.status.failed,
                "pods": [f"{p.metadata.name}: {p.status.phase}" for p in pods],
            }
        )
    return out


def _key(record: dict[str, Any]) -> str:
    uri = str(record.get("uri") or record.get("key") or "")
    return uri.removeprefix(f"s3://{BUCKET}/")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    data = {"mode": "quick" if args.quick else "full", **run(args.quick, lambda m: print(m, flush=True))}
    text = json.dumps(data, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0 if data["outputs"].get("exactly_once") and data["chaos"]["phase"] == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
