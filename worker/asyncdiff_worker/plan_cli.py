"""``asyncdiff plan JOB.yaml [--devices N] [--goal throughput|latency]``: print the layout and the shard plan a job
would get, without a cluster.

Why: the operator plans a job with ``spec.parallelism.devices`` through the same ``planner.plan_layout`` and
``shards.plan_shards``; seeing the choice (and why) before submitting avoids a surprise on a GPU pool. Options
override the manifest's planner inputs, so one file can be tried against several pool sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asyncdiff_worker.exit_codes import ExitCode
from asyncdiff_worker.planner import PlanError, plan_layout, resolve_layout
from asyncdiff_worker.shards import plan_shards
from asyncdiff_worker.spec import load_job_file
from asyncdiff_worker.spec.models import JobSpec


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asyncdiff plan", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("job", help="AsyncDiffJob manifest (YAML) or a bare spec")
    parser.add_argument("--devices", type=int, default=None, help="devices to plan for (overrides the manifest)")
    parser.add_argument("--goal", choices=("throughput", "latency"), default=None, help="overrides the manifest")
    parser.add_argument("--quality", choices=("exact", "high", "any"), default=None, help="overrides the manifest")
    parser.add_argument("--gpu-memory", type=float, default=None, help="GiB per device (default 80)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser.parse_args(argv)


def _with_planner_inputs(spec: JobSpec, args: argparse.Namespace) -> JobSpec:
    data = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    par = dict(data.get("parallelism", {}))
    for key, value in (("devices", args.devices), ("goal", args.goal), ("quality", args.quality)):
        if value is not None:
            par[key] = value
    data["parallelism"] = par
    return JobSpec.model_validate(data)


def main(argv: list[str]) -> int:
    try:
        args = _parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else int(ExitCode.INVALID_SPEC)
    if args.devices is not None and args.devices < 1:
        print(f"asyncdiff plan: --devices: {args.devices} is less than the minimum 1", file=sys.stderr)
        return int(ExitCode.INVALID_SPEC)
    job = load_job_file(Path(args.job))
    if isinstance(job, list):
        print(f"asyncdiff plan: {args.job}: invalid job:", file=sys.stderr)
        for message in job:
            print(f"  {message}", file=sys.stderr)
        return int(ExitCode.INVALID_SPEC)
    try:
        spec = _with_planner_inputs(job.spec, args)
        if spec.parallelism.devices is None:
            layout_plan = None
            resolved = spec
        else:
            plan_layout(spec, gpu_memory_gib=args.gpu_memory)  # the clear error first
            resolved, layout_plan = resolve_layout(spec, gpu_memory_gib=args.gpu_memory)
    except (PlanError, ValueError) as exc:
        print(f"asyncdiff plan: {exc}", file=sys.stderr)
        return int(ExitCode.INVALID_SPEC)
    shards = plan_shards(resolved)
    if args.json:
        print(
            json.dumps({"layout": layout_plan.to_dict() if layout_plan else None, "shards": shards.to_dict()}, indent=2)
        )
        return 0
    par = resolved.parallelism
    if layout_plan is None:
        print(
            f"layout: {par.replicas} replica(s) x modelN {par.model_n} stride {par.stride} "
            f"(as written; set spec.parallelism.devices or --devices to plan)"
        )
    else:
        print(f"layout: {layout_plan.layout.describe()}")
        print(f"reason: {layout_plan.reason}")
    total = shards.total_outputs if shards.total_outputs is not None else "unknown (promptsFrom without promptCount)"
    size = f"{shards.shard_size} outputs" if shards.total_outputs is not None else "every output"
    print(f"outputs: {total}; {shards.num_shards} shard(s) of {size}; {shards.reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
