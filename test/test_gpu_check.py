"""bench/gpu_check.py --dry-run: the GPU check's own code on the CPU with a
tiny configuration, as CI can run it. Without torch (the project venv) the
torch parts are recorded as skipped; with torch they run on the CPU and the
correctness checks must pass. No GPU measurement is made here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = ("env", "tests", "correctness", "preprocess", "latency", "cameras")


def test_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=tmp_path,  # the script finds the repository itself
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["failures"] == []
    assert data["env"]["dry_run"] is True
    for part in PARTS:
        assert data[part]["status"] in ("ok", "skipped"), (part, data[part])
    table = out.with_suffix(".md").read_text()
    assert "DRY RUN" in table and table in proc.stdout
    if importlib.util.find_spec("torch") is None:
        assert data["correctness"]["reason"] == "torch is not installed"
        return
    corr = data["correctness"]
    assert corr["status"] == "ok"
    runs = [v for v in corr.values() if isinstance(v, dict) and "passed" in v]
    assert len(runs) == 2 and all(v["passed"] and v["ref_count"] > 0 for v in runs), corr
    assert data["preprocess"]["max_lsb"] <= 1.0
    assert data["cameras"]["fp32"]["batched"]["frames_per_s"] > 0
