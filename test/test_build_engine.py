"""`perception build-engine`: builds the engine caches a configuration needs,
as the detector node would make them, so the node's first start loads from
the cache. Here (no GPU) the cache is ONNX Runtime's optimised graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from perception.cli.build_engine import main as build_engine
from perception.config.generated import DetectorModelParams
from perception.replay.cli import main as perception

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "default_detector.onnx"
SINGLE = REPO / "config" / "single_camera.yaml"
CARLA = REPO / "config" / "pipeline_carla.yaml"


def _sets(cache: Path, node: str = "detector") -> list[str]:
    return ["--set", f"{node}.model.path={MODEL}", "--set", f"{node}.model.cache_dir={cache}"]


def test_config_builds_then_finds_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert perception(["build-engine", str(SINGLE), *_sets(cache)]) == 0
    out = capsys.readouterr().out
    assert "[build-engine] detector: building" in out  # progress lines
    assert "detector: ok: built:" in out
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and entries[0].name.startswith("default_detector.onnxruntime.")
    assert build_engine([str(SINGLE), *_sets(cache), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "ok: found in the cache" in out


def test_the_node_loads_what_it_built(tmp_path: Path) -> None:
    """The detector's own engine construction (build_detector, used by the
    node, the CLIs and replay) hits the entry build-engine wrote."""
    from perception.pipeline import build_detector

    cache = tmp_path / "cache"
    assert build_engine([str(CARLA), *_sets(cache), "--quiet"]) == 0
    model = DetectorModelParams(path=str(MODEL), cache_dir=str(cache))
    det = build_detector(model, score_threshold=0.3, iou_threshold=0.5, max_detections=100)
    try:
        status = det.engine.build_status
        assert status is not None and status.serving == "cache", status
    finally:
        det.engine.close()


def test_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "c"
    assert build_engine([str(MODEL), "--cache-dir", str(cache), "--threads", "1"]) == 0
    assert "ok: built:" in capsys.readouterr().out
    assert any(cache.iterdir())


def test_nothing_to_build(capsys: pytest.CaptureFixture[str]) -> None:
    """ONNX Runtime without model.cache_dir optimises at start-up: said, exit 0."""
    assert build_engine([str(SINGLE), "--set", f"detector.model.path={MODEL}"]) == 0
    assert "nothing to build" in capsys.readouterr().out


def test_failed_build_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + b"not a model" * 10)
    assert build_engine([str(bad), "--cache-dir", str(tmp_path / "c")]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.yaml"], "not found"),
        ([str(CARLA)], "model.path is empty"),
        ([str(SINGLE), "--runtime", "tensorrt"], "apply to a MODEL"),
        ([str(MODEL), "--set", "detector.model.threads=1"], "applies to a CONFIG"),
        ([str(SINGLE), "--set", "detector.model.runtime=nope"], "model.runtime"),
    ],
)
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_engine(args) == 2
    assert message in capsys.readouterr().err


def test_perception_command_lists_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert perception(["--help"]) == 0
    assert "build-engine" in capsys.readouterr().out
    assert perception(["nope"]) == 2
    assert "build-engine" in capsys.readouterr().err
