"""Fleet summary, run comparison and output storage of `perception replay`
(no Ray and no pipeline needed: results are made by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from perception.replay import fleet, storage
from perception.replay.job import InputResult


def _result(key: str, mota: float, switches: float, status: str = "ok", **kw) -> InputResult:
    return InputResult(
        input=f"/drives/{key}",
        key=key,
        status=status,  # type: ignore[arg-type]
        frames=20,
        fps=10.0,
        wall_s=6.0,
        counters={"front": {"received": 20, "processed": 20}},
        metrics={"mota": mota, "id_switches": switches, "ap50": {"car": 0.5}, "note": "x"},
        **kw,
    )


def test_summary_aggregates_and_reports_failures(tmp_path: Path) -> None:
    results = [
        _result("a", 0.5, 2),
        _result("b", 0.7, 0, attempts=2),
        InputResult("/drives/c", "c", "failed", reason="truncated bag: no messages"),
    ]
    jpath, mpath = fleet.write_fleet_summary(results, tmp_path, elapsed_s=6.0)
    data = json.loads(Path(jpath).read_text())
    agg = data["aggregate"]
    assert (agg["inputs"], agg["ok"], agg["failed"], agg["retried"]) == (3, 2, 1, 1)
    assert agg["frames"] == 40 and agg["images"] == 120
    assert agg["fps"] == pytest.approx(20.0) and agg["fps_per_worker"] == pytest.approx(10.0)
    assert agg["counters"] == {"front": {"received": 40, "processed": 40}}
    assert agg["metrics_mean"]["mota"] == pytest.approx(0.6)
    assert agg["metrics_mean"]["ap50/car"] == pytest.approx(0.5)
    assert data["failures"] == [
        {"input": "/drives/c", "key": "c", "reason": "truncated bag: no messages"}
    ]
    md = Path(mpath).read_text()
    assert "truncated bag: no messages" in md and "| b | ok | 20 |" in md


def test_metric_directions() -> None:
    assert fleet.direction("mota") == 1 and fleet.direction("cam/idf1") == 1
    assert fleet.direction("id_switches") == -1 and fleet.direction("centre/median_m") == -1
    assert fleet.direction("latency/detector/p95") == -1
    assert fleet.direction("gt_objects") == 0


def test_compare_runs_says_which_drive_got_better(tmp_path: Path) -> None:
    fleet.write_fleet_summary([_result("a", 0.5, 2), _result("b", 0.7, 0)], tmp_path / "A")
    fleet.write_fleet_summary(
        [
            _result("a", 0.6, 1),  # better on both
            _result("b", 0.6, 0),  # worse MOTA, same switches
            InputResult("/drives/new", "new", "ok"),
        ],
        tmp_path / "B",
    )
    md = fleet.compare_runs(tmp_path / "A", tmp_path / "B", tmp_path / "cmp")
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    verdicts = {d["key"]: d["verdict"] for d in data["drives"]}
    assert verdicts == {"a": "better", "b": "worse", "new": "only in B"}
    a = next(d for d in data["drives"] if d["key"] == "a")
    mota = next(m for m in a["metrics"] if m["metric"] == "mota")
    assert mota["delta"] == pytest.approx(0.1) and mota["change"] == "better"
    assert data["totals"] == {"better": 1, "worse": 1, "mixed": 0, "same": 0}
    text = md.read_text()
    assert "| 1 | a | better | 2 | 0 |" in text and "compare_mota.png" in text
    assert (tmp_path / "cmp" / "compare_mota.png").stat().st_size > 1000
    assert fleet.main_compare([str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    assert (tmp_path / "B" / "compare" / "compare.md").is_file()
    assert fleet.main_compare([str(tmp_path / "A"), str(tmp_path / "missing")]) == 2


def test_nan_metrics_stay_valid_json(tmp_path: Path) -> None:
    r = _result("a", float("nan"), 0)
    jpath, _ = fleet.write_fleet_summary([r], tmp_path)
    data = json.loads(Path(jpath).read_text())  # strict JSON: NaN written as null
    assert data["inputs"][0]["metrics"]["mota"] is None
    metrics = fleet.compare_summaries(data, data)["drives"][0]["metrics"]
    mota = next(m for m in metrics if m["metric"] == "mota")
    assert math.isnan(mota["a"]) and mota["change"] == "n/a"


def test_publish_locally_is_a_rename_and_keeps_the_first_copy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for content in ("first", "second"):
        staged = out / f".tmp-k-{content}"
        staged.mkdir(parents=True)
        (staged / "f.txt").write_text(content)
        assert storage.publish(staged, str(out), "k") == str(out / "k")
        assert not staged.exists()
    assert (out / "k" / "f.txt").read_text() == "first"
    assert storage.is_finished(str(out), "k") and not storage.is_finished(str(out), "x")
    assert storage.local_dir(f"file://{out}") == out and storage.local_dir("s3://b/p") is None


def test_publish_to_a_filesystem_uploads_then_marks(tmp_path: Path) -> None:
    pafs = pytest.importorskip("pyarrow.fs")
    remote = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    (tmp_path / "bucket").mkdir()
    staged = tmp_path / "staged"
    (staged / "sub").mkdir(parents=True)
    (staged / "sub" / "a.txt").write_text("a")
    assert not storage.is_finished("runs/r1", "k", filesystem=remote)
    storage.publish(staged, "runs/r1", "k", filesystem=remote)
    assert (tmp_path / "bucket/runs/r1/k/sub/a.txt").read_text() == "a"
    assert (tmp_path / "bucket/runs/r1/k" / storage.MARKER).is_file()
    assert storage.is_finished("runs/r1", "k", filesystem=remote)
    assert not staged.exists()


def test_summary_through_a_uri(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow.fs")
    uri = f"file://{tmp_path}/run"
    fleet.write_fleet_summary([_result("a", 0.5, 1)], uri)
    assert fleet.load_summary(uri)["aggregate"]["ok"] == 1
    _fs, base = storage.open_output(uri)
    assert base == str(tmp_path / "run")
    with pytest.raises(storage.OutputError, match="pyarrow cannot open"):
        storage.open_output("nosuchscheme://x/y")
