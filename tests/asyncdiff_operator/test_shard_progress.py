"""Unit tests of the sharded progress arithmetic: outputs summed over shards, in-flight samples, rate and ETA."""

from __future__ import annotations

from asyncdiff_operator.shard_progress import format_eta, in_flight_of, next_progress, shard_done


def size_of(index: int) -> int:
    """10 outputs in 3 shards of 4: 4, 4, 2."""
    return [4, 4, 2][index]


def test_done_sums_completed_shards_and_capped_in_flight_counts() -> None:
    assert shard_done({0}, {}, size_of) == 4
    assert shard_done({0, 2}, {1: 3}, size_of) == 9
    assert shard_done({0}, {1: 99}, size_of) == 8  # a sample cannot count more than its shard holds
    assert shard_done({1}, {1: 2}, size_of) == 4  # a completed shard's stale sample is not added twice


def test_eta_formatting() -> None:
    assert [format_eta(s) for s in (None, 0, 45.4, 190, 7500, 3 * 86400 + 4 * 3600)] == [
        "-",
        "0s",
        "45s",
        "3m10s",
        "2h05m",
        "3d04h",
    ]


def test_first_observation_sets_the_anchor_and_has_no_rate() -> None:
    p = next_progress(None, completed=set(), size_of=size_of, total=10, sample=(0, 1), now=1000.0)
    assert p["outputsDone"] == 1 and p["summary"] == "1/10" and p["inFlight"] == {"0": 1}
    assert p["rateAnchorTs"] == 1000.0 and p["rateAnchorDone"] == 1
    assert "outputsPerMinute" not in p and p["eta"] == "-"


def test_rate_and_eta_from_the_anchor() -> None:
    p0 = next_progress(None, completed=set(), size_of=size_of, total=10, sample=None, now=0.0)
    # 60 s later shard 0 is complete and shard 1 has 2 outputs: 6 outputs per minute, 4 left -> 40 s
    p1 = next_progress(p0, completed={0}, size_of=size_of, total=10, sample=(1, 2), now=60.0, step=(3, 25))
    assert p1["outputsDone"] == 6 and p1["inFlight"] == {"1": 2}
    assert p1["outputsPerMinute"] == 6.0 and p1["etaSeconds"] == 40 and p1["eta"] == "40s"
    assert (p1["step"], p1["steps"]) == (3, 25)
    # shard 1 completes: its in-flight entry is dropped; a lower resample never lowers a shard's count
    p2 = next_progress(p1, completed={0, 1}, size_of=size_of, total=10, sample=(2, 1), now=90.0)
    assert p2["inFlight"] == {"2": 1} and p2["outputsDone"] == 9
    p3 = next_progress(p2, completed={0, 1}, size_of=size_of, total=10, sample=(2, 0), now=95.0)
    assert p3["outputsDone"] == 9
    done = next_progress(p3, completed={0, 1, 2}, size_of=size_of, total=10, sample=None, now=100.0)
    assert done["outputsDone"] == 10 and done["eta"] == "0s" and done["inFlight"] == {}


def test_rate_window_slides_to_follow_the_recent_pace() -> None:
    p = next_progress(None, completed=set(), size_of=lambda i: 1000, total=1000, sample=(0, 0), now=0.0)
    p = next_progress(p, completed=set(), size_of=lambda i: 1000, total=1000, sample=(0, 600), now=600.0)
    assert p["rateAnchorTs"] == 300.0 and p["rateAnchorDone"] == 300  # midpoint of the old window, same pace
    assert p["outputsPerMinute"] == 60.0


def test_in_flight_of_tolerates_bad_keys() -> None:
    assert in_flight_of({"inFlight": {"1": 3, "x": 2, "2": "no"}}) == {1: 3}
    assert in_flight_of(None) == {}
