"""``make demo`` (``python -m asyncdiff_worker.demo``) runs a local AsyncDiffJob end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from asyncdiff_worker.demo import main

pytestmark = pytest.mark.slow


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    outputs = tmp_path / "demo" / "outputs"
    pngs = sorted(outputs.glob("*.png"))
    assert len(pngs) == 4
    manifest = json.loads((outputs / "manifest.json").read_text())
    assert [Path(o["uri"]).name for o in manifest["outputs"]] == [p.name for p in pngs]
    assert "outputs copied to" in out and "embedded S3 stopped" in out
    assert (tmp_path / "demo" / "tiny-sd.yaml").is_file()
