"""The progress channel (JSON lines, heartbeat, file, terminal bar) and the result manifest."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from asyncdiff_worker.manifest import (
    JobInfo,
    OutputRecord,
    ResultManifest,
    Runtime,
    Timings,
    read_manifest,
    software_versions,
    write_manifest,
)
from asyncdiff_worker.progress import ProgressReporter, parse_event, render_bar
from asyncdiff_worker.spec import AsyncDiffJob, validate_job
from asyncdiff_worker.storage import Storage


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_whole_state(tmp_path: Path) -> None:
    out = io.StringIO()
    progress_file = tmp_path / "progress.json"
    rep = ProgressReporter(
        "j1", steps=3, stream=out, human=False, progress_file=progress_file, heartbeat_seconds=0, step_interval=0
    )
    rep.phase("preparing")
    rep.set_totals(2, 3)
    rep.begin_output(0)
    for step in (1, 2, 3):
        rep.step(step)
    rep.output_done({"index": 0, "uri": "s3://b/j1/outputs/00000-p0000.png"})
    rep.done(manifest="s3://b/j1/manifest.json")
    events = lines(out)
    assert [e["asyncdiff"] for e in events] == ["phase", "progress", "progress", "progress", "output", "done"]
    assert events[2] | {"ts": 0, "lastProgressTs": 0} == {
        "asyncdiff": "progress",
        "ts": 0,
        "job": "j1",
        "phase": "preparing",
        "outputsDone": 0,
        "outputsTotal": 2,
        "output": 0,
        "step": 2,
        "steps": 3,
        "lastProgressTs": 0,
    }
    assert events[4]["outputsDone"] == 1
    assert events[-1]["phase"] == "done" and events[-1]["manifest"] == "s3://b/j1/manifest.json"
    assert json.loads(progress_file.read_text())["asyncdiff"] == "done"
    assert out.getvalue().startswith('{"asyncdiff":')


def test_step_lines_are_rate_limited_but_the_last_step_always_shows() -> None:
    out = io.StringIO()
    rep = ProgressReporter("j", steps=50, stream=out, human=False, heartbeat_seconds=0, step_interval=60)
    rep.set_totals(1, 50)
    for step in range(1, 51):
        rep.step(step)
    assert [e["step"] for e in lines(out)] == [1, 50]


def test_every_output_shows_its_own_current_step_and_real_step_count() -> None:
    """Outputs faster than the rate limit still show their first and last step; img2img (strength < 1) counts the
    steps the pipeline really runs, so the bar reaches the end instead of staying at 0 or 24/30."""
    out = io.StringIO()
    rep = ProgressReporter("j", steps=30, stream=out, human=False, heartbeat_seconds=0, step_interval=3600)
    rep.set_totals(2, 30)
    for index in range(2):
        rep.begin_output(index)
        for step in range(1, 25):
            rep.step(step, 24)
        rep.output_done({"index": index})
    shown = [(e["asyncdiff"], e["output"], e["step"], e["steps"]) for e in lines(out)]
    assert shown == [
        ("progress", 0, 1, 24),
        ("progress", 0, 24, 24),
        ("output", 0, 24, 24),
        ("progress", 1, 1, 24),
        ("progress", 1, 24, 24),
        ("output", 1, 24, 24),
    ]


def test_heartbeat_keeps_lastprogressts_still() -> None:
    out = io.StringIO()
    rep = ProgressReporter("j", stream=out, human=False, heartbeat_seconds=0.05)
    rep.phase("generating")
    rep.start_heartbeat()
    deadline = time.monotonic() + 60  # a safety net only: the test waits for the beats themselves
    while sum(e["asyncdiff"] == "heartbeat" for e in lines(out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    rep.stop_heartbeat()
    beats = [e for e in lines(out) if e["asyncdiff"] == "heartbeat"]
    assert len(beats) >= 2
    assert len({e["lastProgressTs"] for e in beats}) == 1  # no progress: a stall is visible
    assert all(float(e["ts"]) >= float(e["lastProgressTs"]) for e in beats)  # type: ignore[arg-type]


def test_human_mode_and_disabled_ranks() -> None:
    out = io.StringIO()
    rep = ProgressReporter("j", stream=out, human=True, heartbeat_seconds=0, step_interval=0)
    rep.set_totals(4, 10)
    rep.step(5)
    assert "[" in out.getvalue() and "0/4 outputs  step 5/10" in out.getvalue()
    assert "{" not in out.getvalue()
    silent = io.StringIO()
    ProgressReporter("j", stream=silent, enabled=False).phase("x")
    assert silent.getvalue() == ""
    assert render_bar({"outputsDone": 2, "outputsTotal": 4, "step": 0, "steps": 10}).startswith("[" + "#" * 15)


def test_parse_event() -> None:
    assert parse_event('[rank0]: {"asyncdiff":"progress","step":1}') == {"asyncdiff": "progress", "step": 1}
    assert parse_event("plain log line") is None
    assert parse_event('{"asyncdiff": broken') is None


def test_manifest_round_trip(tmp_path: Path) -> None:
    job = validate_job(
        {
            "model": {"family": "sd15", "source": "/m"},
            "generation": {"prompts": ["a"], "steps": 4},
            "output": {"uri": f"file://{tmp_path}"},
        }
    )
    assert isinstance(job, AsyncDiffJob)
    manifest = ResultManifest(
        job=JobInfo(name="j1", uid="u1"),
        outputs=[
            OutputRecord(
                index=0,
                uri="file:///x.png",
                sha256="0" * 64,
                bytes=10,
                seconds=0.5,
                prompt_index=0,
                image_index=0,
                seed=42,
                prompt="a",
                content_type="image/png",
                format="png",
                width=64,
                height=64,
            )
        ],
        configuration=job.spec,
        versions=software_versions(),
        runtime=Runtime(world_size=2, device="cpu", backend="gloo"),
        timings=Timings(
            started_at="2026-01-01T00:00:00Z",
            finished_at="2026-01-01T00:00:10Z",
            startup_seconds=7,
            model_seconds=1,
            generate_seconds=2,
            upload_wait_seconds=0,
            total_seconds=10,
            seconds_per_output=2,
        ),
    )
    data = json.loads(manifest.to_json())
    assert data["kind"] == "AsyncDiffResult" and data["status"] == "Succeeded"
    assert data["outputs"][0]["promptIndex"] == 0 and data["outputs"][0]["sha256"] == "0" * 64
    assert data["configuration"]["parallelism"]["modelN"] == 2
    assert data["timings"]["secondsPerOutput"] == 2
    assert {"asyncdiff_worker", "python", "pillow"} <= set(data["versions"])
    location = Storage.locate(f"file://{tmp_path}/j1/manifest.json")
    write_manifest(Storage(), location, manifest)
    assert read_manifest(Storage(), location) == manifest
