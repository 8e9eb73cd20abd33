"""Dispatch `asyncdiff <command> ...` to the module that owns the command (imported lazily)."""

from __future__ import annotations

import importlib
import sys

# command -> (module, help). Each module exposes `main(argv: list[str]) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("asyncdiff_worker.local_run", "run an AsyncDiffJob manifest locally under torchrun"),
    "plan": ("asyncdiff_worker.plan_cli", "print the layout and shards a job gets (the planner), without a cluster"),
    "dev-cluster": ("asyncdiff_devcluster.cli", "start or stop the local emulated Kubernetes control plane"),
    "submit": ("asyncdiff_operator.usercli", "apply an AsyncDiffJob and follow its progress"),
    "status": ("asyncdiff_operator.usercli", "show an AsyncDiffJob's status"),
    "fetch": ("asyncdiff_operator.usercli", "download an AsyncDiffJob's outputs"),
}


def _usage() -> str:
    lines = ["usage: asyncdiff <command> [args...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"asyncdiff: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if COMMANDS[command][0] == "asyncdiff_operator.usercli":
        rest = [command, *rest]
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
