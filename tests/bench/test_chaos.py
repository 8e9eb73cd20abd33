"""The chaos bench's bookkeeping: stuck intervals from a sampled CR timeline, their attribution to chaos events, the
exactly-once / re-render report, and the schedule (pure functions; the run itself is ``make bench``)."""

from __future__ import annotations

from typing import Any

from bench.chaos import (
    QUICK,
    Event,
    Plan,
    Sample,
    attribute,
    changes,
    output_report,
    progress_per_attempt,
    sample_of,
    schedule,
    stuck_intervals,
)


def s(t: float, phase: str = "Running", done: int = 0, step: int = 0, attempts: int = 1) -> Sample:
    return Sample(t=t, phase=phase, attempts=attempts, outputs_done=done, step=step)


def test_sample_of_reads_the_status_and_tolerates_missing_fields() -> None:
    cr = {
        "status": {
            "phase": "Running",
            "attempts": 2,
            "progress": {"outputsDone": 3, "step": 4, "lastProgressTs": 12.5},
            "conditions": [{"type": "Running", "status": "True", "reason": "PodRunning"}],
        }
    }
    got = sample_of(1.0, cr)
    assert got.fingerprint == ("Running", 2, 3, 4, 12.5, "True/PodRunning")
    assert sample_of(2.0, {"metadata": {}}).fingerprint == ("", 0, 0, 0, None, "")
    assert Sample(0, "Succeeded").finished and not Sample(0, "Running").finished


def test_stuck_intervals_are_the_unchanged_stretches_longer_than_the_threshold() -> None:
    timeline = [
        s(0.0, "Pending"),
        s(0.5, "Pending"),  # unchanged 0 -> 3: 3 s, stuck
        s(3.0, "Running"),
        s(4.0, "Running", step=1),
        s(5.0, "Running", step=2),  # changes every second: fine
        s(6.0, "Running", step=2),
        s(6.9, "Running", step=3),  # 5 -> 6.9: 1.9 s, below 2
        s(12.0, "Running", step=3),
        s(12.5, "Succeeded", done=4),  # 6.9 -> 12.5: stuck, ends at the finished sample
        s(20.0, "Succeeded", done=4),  # after the end: never stuck
    ]
    assert stuck_intervals(timeline, 2.0) == [(0.0, 3.0), (6.9, 12.5)]
    # a job still unfinished at the last sample: the open stretch counts
    assert stuck_intervals([s(0.0), s(1.0), s(9.0)], 2.0) == [(0.0, 9.0)]
    assert stuck_intervals([], 2.0) == []
    # a new attempt is a change even when progress looks the same
    assert stuck_intervals([s(0.0, attempts=1), s(1.5, attempts=2), s(3.0, attempts=3)], 2.0) == []


def test_attribute_names_overlapping_and_just_preceding_events() -> None:
    events = [
        Event(1.0, "operator-killed", "restart #1"),
        Event(10.0, "s3-stopped", "15.0 s", until=25.0),
        Event(40.0, "pod-deleted", "chaos-abc"),
    ]
    assert attribute((2.5, 8.0), events, lead_s=2.0) == ["operator-killed@1s (restart #1)"]
    assert attribute((20.0, 30.0), events, lead_s=2.0) == ["s3-stopped@10s (15.0 s)"]
    assert attribute((41.0, 45.0), events, lead_s=2.0) == ["pod-deleted@40s (chaos-abc)"]
    assert attribute((50.0, 60.0), events, lead_s=2.0) == []


def test_output_report_checks_exactly_once_and_counts_rerenders() -> None:
    keys = [f"runs/j/outputs/{i:05d}-p{i}.png" for i in range(3)]
    clean = output_report(3, keys, {k: 1 for k in keys}, keys)
    assert clean["exactly_once"] and clean["outputs_rendered_more_than_once"] == 0 and clean["uploads_total"] == 3
    retried = output_report(3, keys, {keys[0]: 3, keys[1]: 2, keys[2]: 1}, keys)
    assert retried["exactly_once"]  # re-renders overwrite the same key: still exactly once
    assert retried["outputs_rendered_more_than_once"] == 2 and retried["extra_renders"] == 3
    assert retried["rerendered"] == {keys[0]: 2, keys[1]: 1}
    duplicated = output_report(3, [*keys, keys[0]], {k: 1 for k in keys}, keys)
    assert not duplicated["exactly_once"] and duplicated["duplicates_in_manifest"] == 1
    stray = output_report(3, keys, {k: 1 for k in keys}, [*keys, "runs/j/outputs/old.png"])
    assert not stray["exactly_once"] and stray["extra_objects"] == ["runs/j/outputs/old.png"]
    missing = output_report(3, keys, {k: 1 for k in keys[:2]}, keys[:2])
    assert not missing["exactly_once"] and missing["missing_objects"] == [keys[2]]


def test_schedule_follows_the_plan() -> None:
    plan = Plan(duration_s=180.0, outputs=1, steps=1, s3_outage_at_s=75.0)
    actions = schedule(plan)
    assert [t for t, _ in actions] == sorted(t for t, _ in actions)
    kills = [t for t, a in actions if a == "kill-operator"]
    gaps = [b - a for a, b in zip([0.0, *kills], kills, strict=False)]
    assert kills and all(10.0 <= g <= 20.0 for g in gaps) and kills[-1] < 180.0
    assert [t for t, a in actions if a == "delete-pod"] == [30.0, 60.0, 90.0, 120.0, 150.0]
    assert [(t, a) for t, a in actions if "s3" in a] == [(75.0, "stop-s3"), (90.0, "start-s3")]
    assert schedule(QUICK) == schedule(QUICK)  # seeded: the same run every time


def test_summary_section_reports_a_finished_and_an_unfinished_run() -> None:
    from bench.report import _chaos_md

    plan = {"outputs": 4, "steps": 2, "duration_s": 60.0, "kill_every_s": [10.0, 20.0], "delete_every_s": 30.0}
    base: dict[str, Any] = {
        "mode": "quick",
        "plan": {**plan, "s3_outage_s": 15.0},
        "stuck_threshold_s": 2.0,
        "baseline_seconds": 30.0,
        "events": [{"t": 30.0, "kind": "pod-deleted"}],
        "stuck_intervals": [{"start_s": 31.0, "end_s": 45.0, "seconds": 14.0, "causes": ["pod-deleted@30s"]}],
        "stuck_seconds_total": 14.0,
        "outputs": {"exactly_once": True, "manifest_complete": True, "outputs_rendered_more_than_once": 2},
    }
    done = {"phase": "Succeeded", "attempts": 2, "wall_seconds": 80.0, "time_lost_seconds": 50.0, "operator_starts": 5}
    text = "\n".join(_chaos_md({**base, "chaos": done}))
    assert "| 80 s / 30 s / 50 s |" in text and "pod-deleted@30s" in text and "2 of 4" in text
    stuck = {**done, "phase": "Running", "time_lost_seconds": None, "note": "not finished 400 s after it was created"}
    text = "\n".join(_chaos_md({**base, "chaos": stuck}))
    assert "unbounded (not finished)" in text and "not finished 400 s" in text


def test_progress_per_attempt_and_the_compressed_timeline() -> None:
    timeline = [s(0.0, attempts=1), s(1.0, done=2, attempts=1), s(2.0, done=0, attempts=2), s(3.0, done=0, attempts=2)]
    assert progress_per_attempt(timeline) == {1: 2, 2: 0}
    assert [row[0] for row in changes(timeline)] == [0.0, 1.0, 2.0]
