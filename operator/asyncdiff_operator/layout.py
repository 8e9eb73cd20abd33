"""The layout a single-node job runs with: groups (replicas) x devices per group, and the shards they share.

Why one place: the child Job (completions = shards, parallelism = groups, GPUs per pod = devices per group), the
status (devices per group and in total, outputs per shard for the progress sum) and the printer columns must agree,
and they all derive from the same three inputs: the job's parallelism (or, with ``spec.parallelism.devices`` and
``goal``, the worker's layout planner), the worker's shard plan (``asyncdiff_worker.shards.plan_shards``: how the
outputs are cut into shards, the same function the worker renders by, so the operator never disagrees with the
worker about which outputs index i holds), and ``spec.parallelism.replicas``.

Replicas above the number of shards are clamped (an extra group would have nothing to render) and the clamp is said
in ``Layout.note``, which the operator writes into status. Multi-node jobs (``runPolicy.numNodes > 1``) are one group
whose pods are node ranks, not shards; they keep their own Indexed Job (``children.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asyncdiff_worker.shards import ShardPlan, plan_shards
from asyncdiff_worker.spec import JobSpec

from asyncdiff_operator.api import AsyncDiffJobSpec


@dataclass(frozen=True)
class Layout:
    """How a job runs: ``groups`` process groups of ``devices_per_group`` processes over ``plan.num_shards``."""

    model_n: int
    stride: int
    cfg_parallel: bool
    replicas: int  # what the spec asks for now
    groups: int  # replicas clamped to the shards: the child Job's parallelism
    devices_per_group: int
    plan: ShardPlan
    reason: str = ""  # the planner's reason, when it chose the layout
    note: str = ""  # e.g. the replicas clamp

    @property
    def devices_total(self) -> int:
        return self.groups * self.devices_per_group

    @property
    def summary(self) -> str:
        """``groups x devices per group``, for the Layout printer column."""
        return f"{self.groups}x{self.devices_per_group}"


def running_layout(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``status.layout`` of a job whose child exists (``status.attempts`` > 0), else None: what ``planned`` keeps."""
    layout = status.get("layout")
    return layout if status.get("attempts") and isinstance(layout, Mapping) else None


def _kept(spec: AsyncDiffJobSpec, running: Mapping[str, Any]) -> tuple[AsyncDiffJobSpec, str] | None:
    """A running planned job keeps the layout chosen when its child was made (``status.layout``); only its replicas
    follow ``spec.parallelism.replicas``, the one mutable parallelism field, so scaling a planned job neither
    re-plans it (a new modelN mid-run) nor disagrees with its devices. None when the status has no layout."""
    from asyncdiff_worker.planner import Layout as Chosen
    from asyncdiff_worker.planner import with_layout

    try:
        model_n, stride = int(running["modelN"]), int(running["stride"])
        replicas = int(running["replicas"])
    except (KeyError, TypeError, ValueError):
        return None
    if "replicas" in spec.parallelism.model_fields_set:
        replicas = int(spec.parallelism.replicas)
    chosen = Chosen(model_n, stride, bool(running.get("cfgParallel")), replicas)
    data = with_layout(spec.model_dump(mode="json", by_alias=True, exclude_unset=True), chosen)
    return AsyncDiffJobSpec.model_validate(data), str(running.get("reason") or "")


def planned(spec: AsyncDiffJobSpec, running: Mapping[str, Any] | None = None) -> tuple[AsyncDiffJobSpec, str]:
    """The spec with the planner's layout written in (modelN, stride, cfgParallel, replicas) and the planner's
    reason, when the job gives ``spec.parallelism.devices``; else the spec itself and "". The worker receives the
    planned spec, so it renders with the layout the operator scheduled (it never plans again). ``running``: the
    ``status.layout`` of a job whose child exists (``running_layout``), kept as it is but for the replicas. Raises
    ``asyncdiff_worker.planner.PlanError`` (a ValueError naming the field) when the devices do not fit."""
    if spec.parallelism.devices is None:
        return spec, ""
    kept = _kept(spec, running) if running is not None else None
    if kept is not None:
        return kept
    from asyncdiff_worker.planner import resolve_layout, with_layout

    given = spec.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"run_policy", "pod"})
    _, plan = resolve_layout(JobSpec.model_validate(given))  # only what the user set: the rest is the planner's
    if plan is None:
        return spec, ""
    data = with_layout(spec.model_dump(mode="json", by_alias=True, exclude_unset=True), plan.layout)
    chosen: AsyncDiffJobSpec = AsyncDiffJobSpec.model_validate(data)
    return chosen, plan.reason


def effective_spec(spec: AsyncDiffJobSpec, running: Mapping[str, Any] | None = None) -> AsyncDiffJobSpec:
    """``planned(spec, running)``'s spec: what the child Job and the worker run."""
    return planned(spec, running)[0]


def resolve(
    spec: AsyncDiffJobSpec, planned_replicas: int | None = None, running: Mapping[str, Any] | None = None
) -> Layout:
    """The layout of a spec (planned first, see ``effective_spec``).

    ``planned_replicas``: the replicas the running child's shards were planned for (``status.layout.
    plannedReplicas``). The default shard size comes in whole waves of the replicas, so the shard count depends on
    them; a running Job's completions cannot change, so once a child exists the plan keeps the replicas it was
    made with and only the groups (the Job's parallelism) follow ``spec.parallelism.replicas``. ``running``: see
    ``planned``.
    """
    spec, reason = planned(spec, running)
    replicas = int(spec.parallelism.replicas)
    worker_spec = spec.job_spec()
    if planned_replicas is not None and planned_replicas != replicas:
        data = worker_spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["parallelism"]["replicas"] = planned_replicas
        worker_spec = type(worker_spec).model_validate(data)
    plan = plan_shards(worker_spec)
    groups = max(1, min(replicas, plan.num_shards))
    note = ""
    if groups < replicas:
        note = f"replicas {replicas} clamped to {groups}: the job has {plan.num_shards} shard(s)"
    return Layout(
        model_n=int(spec.parallelism.model_n),
        stride=int(spec.parallelism.stride),
        cfg_parallel=bool(spec.parallelism.cfg_parallel),
        replicas=replicas,
        groups=groups,
        devices_per_group=int(spec.devices_per_group),
        plan=plan,
        reason=reason,
        note=note,
    )
