"""Engine cache + background build, exercised with ONNX Runtime's optimised-model
serialisation as the build step. Synchronisation is by events, never by sleep."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from perception.core.engines.base import Engine, EngineInfo
from perception.core.engines.cache import (
    SIDECAR,
    BuildStatus,
    CachedEngine,
    CacheEntryError,
    CacheKey,
    CacheTrustError,
    EngineCache,
)
from perception.core.engines.onnxruntime_engine import OnnxRuntimeBuilder, OnnxRuntimeEngine
from perception.core.engines.testing import TinyModel, write_tiny_model
from perception.core.errors import EngineError, ModelFileError

pytest.importorskip("onnxruntime")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WAIT = 30.0  # generous deadline for events; a healthy run takes milliseconds


class CountingBuilder(OnnxRuntimeBuilder):
    def __init__(self, **kw: object) -> None:
        super().__init__(intra_op_threads=1, **kw)  # type: ignore[arg-type]
        self.builds = 0
        self.loads = 0

    def build(self, model_path, artifact_path, progress):  # type: ignore[no-untyped-def]
        self.builds += 1
        super().build(model_path, artifact_path, progress)

    def load(self, artifact_path):  # type: ignore[no-untyped-def]
        self.loads += 1
        return super().load(artifact_path)


class GatedBuilder(CountingBuilder):
    """Test-only slow builder: announces the build, then waits to be released."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def build(self, model_path, artifact_path, progress):  # type: ignore[no-untyped-def]
        progress(0.1, "gated: waiting for release")
        self.started.set()
        if not self.release.wait(WAIT):
            raise TimeoutError("test never released the gated builder")
        progress(0.5, "gated: released")
        super().build(model_path, artifact_path, progress)


class FailingBuilder(CountingBuilder):
    def build(self, model_path, artifact_path, progress):  # type: ignore[no-untyped-def]
        progress(0.3, "about to fail")
        artifact_path.write_bytes(b"half an engine")
        raise RuntimeError("compiler exploded at layer 7")


class BlockingEngine(Engine):
    """Fallback whose infer blocks until released, to hold a call in flight."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = threading.Event()

    @property
    def info(self) -> EngineInfo:
        return self.inner.info

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        self.entered.set()
        if not self.release.wait(WAIT):
            raise TimeoutError("test never released the blocking engine")
        if self.closed.is_set():
            raise EngineError("closed while in flight")
        return self.inner.infer(batch)

    def close(self) -> None:
        self.closed.set()
        self.inner.close()


@pytest.fixture(autouse=True)
def _private_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own cache key instead of the user's (~/.config)."""
    monkeypatch.setenv("PERCEPTION_ENGINE_CACHE_KEY", str(tmp_path / "keys" / "cache.key"))


@pytest.fixture
def tiny(tmp_path: Path) -> TinyModel:
    return write_tiny_model(tmp_path / "tiny.onnx", metadata={"names": "{0: 'a', 1: 'b'}"})


def _x(b: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((b, 3, 6, 8), dtype=np.float32)


def _check(engine: Engine, tm: TinyModel, b: int = 2) -> None:
    x = _x(b)
    for got, want in zip(engine.infer(x), tm.expected(x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _fallback(tm: TinyModel) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(tm.path, intra_op_threads=1, graph_optimization="disable")


# ---------------------------------------------------------------- happy path


def test_build_in_background_then_next_start_loads_cache(tiny: TinyModel, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    seen: list[BuildStatus] = []
    b1 = CountingBuilder()
    eng = CachedEngine(
        tiny.path, b1, cache_dir, fallback=lambda: _fallback(tiny), on_progress=seen.append
    )
    assert eng.wait(WAIT)
    st = eng.status
    assert st.stage == "ready" and st.serving == "build" and st.error is None
    assert b1.builds == 1 and b1.loads == 1 and eng.generation == 2
    assert Path(st.artifact).is_file() and Path(st.artifact).parent == eng.entry_dir
    assert eng.info.metadata == {"names": "{0: 'a', 1: 'b'}"} and eng.info.name == "tiny"
    _check(eng, tiny)
    stages = [s.stage for s in seen]
    assert stages[0] == "loading_cache" and "building" in stages and stages[-1] == "ready"
    fractions = [s.fraction for s in seen if s.stage in ("building", "loading", "ready")]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(s.serving == "fallback" for s in seen if s.stage == "building")
    eng.close()

    sidecar = json.loads((eng.entry_dir / SIDECAR).read_text())
    assert sidecar["key"]["runtime"] == "onnxruntime"
    assert sidecar["key"]["model_sha256"] == eng.key.model_sha256
    assert sidecar["key"]["device"] and sidecar["key"]["runtime_version"].startswith("1.")

    b2 = CountingBuilder()
    made: list[int] = []
    eng2 = CachedEngine(
        tiny.path, b2, cache_dir, fallback=lambda: made.append(1) or _fallback(tiny)
    )
    assert eng2.status.stage == "ready" and eng2.status.serving == "cache"
    assert eng2.wait(0) and b2.builds == 0 and b2.loads == 1 and made == []
    _check(eng2, tiny, b=5)
    eng2.close()


def test_fallback_serves_while_build_runs(tiny: TinyModel, tmp_path: Path) -> None:
    builder = GatedBuilder()
    fallback = _fallback(tiny)
    eng = CachedEngine(tiny.path, builder, tmp_path / "c", fallback=fallback)
    assert builder.started.wait(WAIT)
    # the build is parked inside the builder: infer must be answered by the fallback
    assert eng.current is fallback and eng.status.serving == "fallback"
    assert eng.status.stage == "building" and not eng.status.done
    _check(eng, tiny)
    other: list[list[np.ndarray]] = []
    t = threading.Thread(target=lambda: other.append(eng.infer(_x(3))))
    t.start()
    t.join(WAIT)
    assert len(other) == 1 and other[0][0].shape[0] == 3
    assert eng.generation == 1

    builder.release.set()
    assert eng.wait(WAIT) and eng.status.stage == "ready"
    assert eng.current is not fallback and eng.generation == 2
    _check(eng, tiny)
    with pytest.raises(EngineError, match="closed"):  # the swapped-out fallback was released
        fallback.infer(_x())
    eng.close()


def test_no_fallback_refuses_until_built(tiny: TinyModel, tmp_path: Path) -> None:
    builder = GatedBuilder()
    eng = CachedEngine(tiny.path, builder, tmp_path / "c")
    assert builder.started.wait(WAIT)
    with pytest.raises(EngineError, match="no engine ready yet"):
        eng.infer(_x())
    with pytest.raises(EngineError, match="no fallback"):
        _ = eng.info
    builder.release.set()
    assert eng.wait(WAIT)
    _check(eng, tiny)
    eng.close()


def test_swap_waits_for_in_flight_call(tiny: TinyModel, tmp_path: Path) -> None:
    builder = GatedBuilder()
    blocking = BlockingEngine(_fallback(tiny))
    eng = CachedEngine(tiny.path, builder, tmp_path / "c", fallback=blocking)
    assert builder.started.wait(WAIT)
    x = _x()
    result: list[list[np.ndarray]] = []
    worker = threading.Thread(target=lambda: result.append(eng.infer(x)))
    worker.start()
    assert blocking.entered.wait(WAIT)  # a call is now in flight on the fallback
    builder.release.set()
    assert eng.wait(WAIT)
    assert eng.current is not blocking
    assert not blocking.closed.is_set()  # retired but not closed under the running call
    _check(eng, tiny)  # new calls already go to the built engine
    blocking.release.set()
    worker.join(WAIT)
    assert len(result) == 1
    np.testing.assert_allclose(result[0][1], tiny.expected(x)[1], rtol=1e-4, atol=1e-5)
    assert blocking.closed.is_set()  # closed once the last call returned
    eng.close()


def test_failing_build_keeps_fallback_and_reports(
    tiny: TinyModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[BuildStatus] = []
    with caplog.at_level(logging.ERROR):
        eng = CachedEngine(
            tiny.path,
            FailingBuilder(),
            tmp_path / "c",
            fallback=_fallback(tiny),
            on_progress=seen.append,
        )
        assert eng.wait(WAIT)
    st = eng.status
    assert st.stage == "failed" and st.serving == "fallback"
    assert st.error is not None and "compiler exploded at layer 7" in st.error
    assert seen[-1].stage == "failed"
    assert any("compiler exploded" in r.getMessage() for r in caplog.records)
    _check(eng, tiny)  # the fallback keeps serving
    # nothing half-built was left in the cache
    assert not eng.entry_dir.exists()
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".tmp-")]
    eng.close()


def test_failing_build_without_fallback(tiny: TinyModel, tmp_path: Path) -> None:
    eng = CachedEngine(tiny.path, FailingBuilder(), tmp_path / "c", background=False)
    assert eng.status.stage == "failed"
    with pytest.raises(EngineError, match=r"build failed.*compiler exploded"):
        eng.infer(_x())


def test_broken_progress_callback_does_not_break_build(tiny: TinyModel, tmp_path: Path) -> None:
    def bad(_: BuildStatus) -> None:
        raise ValueError("callback bug")

    eng = CachedEngine(
        tiny.path, CountingBuilder(), tmp_path / "c", on_progress=bad, background=False
    )
    assert eng.status.stage == "ready"
    _check(eng, tiny)


def test_close_during_build_cancels_cleanly(tiny: TinyModel, tmp_path: Path) -> None:
    builder = GatedBuilder()
    eng = CachedEngine(tiny.path, builder, tmp_path / "c", fallback=_fallback(tiny))
    assert builder.started.wait(WAIT)
    eng.close()
    assert eng.status.stage == "closed" and eng.wait(0)
    builder.release.set()
    assert eng._thread is not None
    eng._thread.join(WAIT)
    assert not eng._thread.is_alive()
    assert eng.current is None and builder.loads == 0
    with pytest.raises(EngineError, match="closed"):
        eng.infer(_x())
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".tmp-")]


# ---------------------------------------------------------------- corrupt entries


def _corrupt(entry: Path, how: str, key: CacheKey | None = None) -> None:
    sidecar = entry / SIDECAR
    meta = json.loads(sidecar.read_text())
    artifact = entry / meta["artifact"]
    if how == "bad_json":
        sidecar.write_text("{not json")
    elif how == "empty_sidecar":
        sidecar.write_text("")
    elif how == "missing_sidecar":
        sidecar.unlink()
    elif how == "sidecar_is_list":
        sidecar.write_text("[1, 2]")
    elif how == "old_format":
        meta["format"] = 99
        sidecar.write_text(json.dumps(meta))
    elif how == "key_mismatch":
        meta["key"]["runtime_version"] = "0.0.1/all"
        sidecar.write_text(json.dumps(meta))
    elif how == "missing_artifact":
        artifact.unlink()
    elif how == "truncated_artifact":
        artifact.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 2])
    elif how == "hash_mismatch":
        data = bytearray(artifact.read_bytes())
        data[-1] ^= 0xFF
        artifact.write_bytes(bytes(data))
    elif how in ("unloadable_artifact", "swapped_unsigned"):
        # content garbage with a matching size and sha256 in the sidecar:
        # "unloadable_artifact" re-signs it with this user's key (as if our own
        # cache had written an artifact the runtime now rejects: load fails,
        # rebuild); "swapped_unsigned" is what anyone without the key can do
        import hashlib

        garbage = b"\x00garbage" * 10
        artifact.write_bytes(garbage)
        meta["artifact_size"] = len(garbage)
        meta["artifact_sha256"] = hashlib.sha256(garbage).hexdigest()
        if how == "unloadable_artifact":
            assert key is not None
            meta["hmac_sha256"] = EngineCache(entry.parent).tag(
                key, meta["artifact"], len(garbage), meta["artifact_sha256"]
            )
        sidecar.write_text(json.dumps(meta))
    elif how == "tag_removed":
        del meta["hmac_sha256"]
        sidecar.write_text(json.dumps(meta))
    elif how == "path_escape":
        meta["artifact"] = "../../etc/passwd"
        sidecar.write_text(json.dumps(meta))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "bad_json",
        "empty_sidecar",
        "missing_sidecar",
        "sidecar_is_list",
        "old_format",
        "key_mismatch",
        "missing_artifact",
        "truncated_artifact",
        "hash_mismatch",
        "unloadable_artifact",
    ],
)
def test_corrupt_entry_is_rebuilt_with_warning(
    tiny: TinyModel, tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    cache_dir = tmp_path / "c"
    first = CachedEngine(tiny.path, CountingBuilder(), cache_dir, background=False)
    assert first.status.serving == "build"
    first.close()
    _corrupt(first.entry_dir, how, first.key)

    builder = CountingBuilder()
    with caplog.at_level(logging.WARNING):
        eng = CachedEngine(tiny.path, builder, cache_dir, fallback=lambda: _fallback(tiny))
        assert eng.wait(WAIT)
    assert eng.status.stage == "ready" and eng.status.serving == "build", eng.status
    assert builder.builds == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("rebuilding" in w for w in warnings), warnings
    _check(eng, tiny)
    eng.close()
    # and the rebuilt entry is healthy again
    again = CachedEngine(tiny.path, CountingBuilder(), cache_dir)
    assert again.status.serving == "cache"
    again.close()


@pytest.mark.parametrize("how", ["path_escape", "swapped_unsigned", "tag_removed"])
def test_unauthenticated_entry_is_refused(tiny: TinyModel, tmp_path: Path, how: str) -> None:
    """Before entries were signed, these edits of entry.json were "corrupt"
    and rebuilt; with the HMAC they prove someone without this user's key
    edited the entry, so it is refused (kept, nothing loaded) instead."""
    cache_dir = tmp_path / "c"
    first = CachedEngine(tiny.path, CountingBuilder(), cache_dir, background=False)
    first.close()
    _corrupt(first.entry_dir, how)
    builder = CountingBuilder()
    made: list[int] = []
    with pytest.raises(CacheTrustError, match="not trusted") as err:
        CachedEngine(
            tiny.path, builder, cache_dir, fallback=lambda: made.append(1) or _fallback(tiny)
        )
    assert first.entry_dir.name in str(err.value) and "rm -r" in str(err.value)
    assert builder.loads == 0 and builder.builds == 0 and made == []
    assert (first.entry_dir / SIDECAR).is_file()  # left for inspection


def test_lookup_reports_reason(tiny: TinyModel, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "c")
    builder = CountingBuilder()
    eng = CachedEngine(tiny.path, builder, cache, background=False)
    eng.close()
    _corrupt(eng.entry_dir, "hash_mismatch")
    with pytest.raises(CacheEntryError, match="sha256"):
        cache.lookup(eng.key, "tiny", ".onnx")


# ---------------------------------------------------------------- keys


def test_key_fields_separate_entries(tiny: TinyModel, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "c")
    base = cache.key(tiny.path, CountingBuilder())
    assert base == cache.key(tiny.path, CountingBuilder())
    assert len(base.model_sha256) == 64
    variants = [
        cache.key(tiny.path, CountingBuilder(input_shape=(1, 3, 640, 640))),
        cache.key(tiny.path, CountingBuilder(level="extended")),
        cache.key(write_tiny_model(tmp_path / "tiny2.onnx", seed=5).path, CountingBuilder()),
    ]
    digests = {base.digest, *(v.digest for v in variants)}
    assert len(digests) == 4
    other_precision = CountingBuilder()
    other_precision.precision = "fp16"
    assert cache.key(tiny.path, other_precision).digest != base.digest


def test_changed_model_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    a = write_tiny_model(path, seed=1)
    e1 = CachedEngine(path, CountingBuilder(), tmp_path / "c", background=False)
    _check(e1, a)
    e1.close()
    b = write_tiny_model(path, seed=2)  # same path, new weights
    builder = CountingBuilder()
    e2 = CachedEngine(path, builder, tmp_path / "c", background=False)
    assert builder.builds == 1 and e2.entry_dir != e1.entry_dir
    _check(e2, b)
    e2.close()


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        CachedEngine(tmp_path / "nope.onnx", CountingBuilder(), tmp_path / "c")


def test_stale_temporary_folders_are_removed(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(proc.stdout)
    root = tmp_path / "c"
    (root / f".tmp-{dead}-deadbeef").mkdir(parents=True)
    (root / f".tmp-{dead}-deadbeef" / "x.onnx").write_bytes(b"half")
    EngineCache(root)
    assert not (root / f".tmp-{dead}-deadbeef").exists()


# ---------------------------------------------------------------- real model


def test_real_model_optimised_matches_original(tmp_path: Path) -> None:
    model = DATA / "yolox_nano.onnx"
    if not model.is_file():
        pytest.skip(f"real model absent: {model} (../shared/data beside the repo)")
    orig = OnnxRuntimeEngine(model, intra_op_threads=2, graph_optimization="disable")
    eng = CachedEngine(model, CountingBuilder(), tmp_path / "c", fallback=orig)
    assert eng.wait(WAIT) and eng.status.serving == "build"
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 416, 416)).astype(np.float32)
    ref = OnnxRuntimeEngine(model, intra_op_threads=2, graph_optimization="disable").infer(x)
    (got,) = eng.infer(x)
    np.testing.assert_allclose(got, ref[0], rtol=1e-3, atol=1e-3)
    assert eng.info.input_shape == (1, 3, 416, 416)
    eng.close()


def test_close_waits_for_in_flight_call(tiny: TinyModel, tmp_path: Path) -> None:
    builder = GatedBuilder()
    blocking = BlockingEngine(_fallback(tiny))
    eng = CachedEngine(tiny.path, builder, tmp_path / "c", fallback=blocking)
    assert builder.started.wait(WAIT)
    result: list[list[np.ndarray]] = []
    worker = threading.Thread(target=lambda: result.append(eng.infer(_x())))
    worker.start()
    assert blocking.entered.wait(WAIT)
    eng.close()
    assert not blocking.closed.is_set()  # the running call keeps its engine
    blocking.release.set()
    builder.release.set()
    worker.join(WAIT)
    assert len(result) == 1 and blocking.closed.is_set()
    with pytest.raises(EngineError, match="closed"):
        eng.infer(_x())


def test_fallback_instance_is_closed_on_cache_hit(tiny: TinyModel, tmp_path: Path) -> None:
    CachedEngine(tiny.path, CountingBuilder(), tmp_path / "c", background=False).close()
    unused = _fallback(tiny)
    eng = CachedEngine(tiny.path, CountingBuilder(), tmp_path / "c", fallback=unused)
    assert eng.status.serving == "cache" and eng.current is not unused
    with pytest.raises(EngineError, match="closed"):
        unused.infer(_x())
    eng.close()
