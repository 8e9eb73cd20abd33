"""The README as a new user reads it: every command it shows exists, every file it names is in the tree, and the
printed ``asyncdiff plan`` example is what the command prints.

Why: a review found README commands that did not work as written (issue 13, item 14). What cannot run here (a real
cluster's ``helm install``, ``kubectl`` against one) is checked as far as the tree goes: the chart, the manifests and
the CRD the commands name exist.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from asyncdiff_cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def command_lines() -> list[str]:
    """The command lines of the README's code blocks (a ``$ `` prompt and trailing ``# comments`` removed,
    backslash continuations joined)."""
    lines: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.strip().removeprefix("$ ")
            line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if line:
                lines.append(line)
    return lines


COMMANDS_SHOWN = [line for line in command_lines() if line.split()[0] in ("asyncdiff", "make", "kubectl", "helm")]


def test_the_readme_shows_the_main_commands() -> None:
    firsts = {line.split()[0] for line in COMMANDS_SHOWN}
    assert {"asyncdiff", "make", "kubectl", "helm"} <= firsts, COMMANDS_SHOWN


@pytest.mark.parametrize("line", [c for c in COMMANDS_SHOWN if c.startswith("asyncdiff ")])
def test_every_asyncdiff_command_exists(line: str) -> None:
    assert shlex.split(line)[1] in COMMANDS, f"{line!r}: asyncdiff has no such command ({', '.join(COMMANDS)})"


def test_every_make_target_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    shown = {shlex.split(line)[1] for line in COMMANDS_SHOWN if line.startswith("make ")}
    assert shown and shown <= targets, shown - targets


def test_every_file_a_command_names_is_in_the_tree() -> None:
    named = {
        token.rstrip(".,;:)")
        for line in COMMANDS_SHOWN
        for token in shlex.split(line)
        if re.match(r"(examples|crds|charts|bench|tools)/", token)
    }
    assert named, "no file named"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_the_plan_example_is_what_asyncdiff_plan_prints() -> None:
    example = re.search(r"\$ (asyncdiff plan \S+)\n(layout: .*)\n", README)
    assert example is not None, "the README's asyncdiff plan example"
    argv = shlex.split(example.group(1))[1:]
    result = subprocess.run(
        [sys.executable, "-m", "asyncdiff_cli.main", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == example.group(2)
