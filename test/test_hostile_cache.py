"""Hostile engine cache (issue 16): a swapped artifact + entry.json, a moved
entry, a lost key, folders and key files others can write, code-bearing
model formats. The cache that runs here is ONNX Runtime's; the TensorRT and
Torch-TensorRT builders go through the same EngineCache.lookup/store."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from perception.core.engines.base import BuildStatus, Engine
from perception.core.engines.cache import (
    SIDECAR,
    CachedEngine,
    CacheTrustError,
    EngineCache,
)
from perception.core.engines.testing import TinyModel, write_tiny_model
from perception.core.engines.trust import (
    check_private_dir,
    ensure_private_dir,
    load_or_create_key,
    warn_code_bearing,
)

ort = pytest.importorskip("onnxruntime")

from perception.core.engines.onnxruntime_engine import (  # noqa: E402
    OnnxRuntimeBuilder,
    OnnxRuntimeEngine,
)

REPO = Path(__file__).resolve().parents[1]
OTHER_UID = 54321  # a uid nobody here runs as
as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another uid needs root"
)


class CountingBuilder(OnnxRuntimeBuilder):
    def __init__(self) -> None:
        super().__init__(intra_op_threads=1)
        self.loads = 0
        self.builds = 0

    def build(self, model_path: Path, artifact_path: Path, progress: Any) -> None:
        self.builds += 1
        super().build(model_path, artifact_path, progress)

    def load(self, artifact_path: Path) -> Engine:
        self.loads += 1
        return super().load(artifact_path)


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config" / "perception" / "engine-cache.key"
    monkeypatch.setenv("PERCEPTION_ENGINE_CACHE_KEY", str(path))
    return path


@pytest.fixture
def models(tmp_path: Path) -> tuple[TinyModel, TinyModel]:
    """Two models with the same I/O and different weights (the victim and the attacker's)."""
    return (
        write_tiny_model(tmp_path / "good.onnx", seed=1),
        write_tiny_model(tmp_path / "evil.onnx", seed=2),
    )


def _x() -> np.ndarray:
    return np.random.default_rng(0).random((2, 3, 6, 8), dtype=np.float32)


def _serves(engine: Engine, tm: TinyModel) -> bool:
    x = _x()
    got = engine.infer(x)
    return all(
        np.allclose(g, w, rtol=1e-4, atol=1e-5) for g, w in zip(got, tm.expected(x), strict=True)
    )


def _build(tm: TinyModel, cache_dir: Path) -> CachedEngine:
    eng = CachedEngine(tm.path, CountingBuilder(), cache_dir, background=False)
    assert eng.status.serving == "build", eng.status
    eng.close()
    return eng


def _swap(victim: CachedEngine, attacker: CachedEngine, *, format_: int = 2) -> None:
    """What someone who can write the cache but lacks the key does: put another
    model's artifact in the victim's entry and fix size and sha256 in entry.json
    (the only check there was before entries were signed)."""
    meta = json.loads((victim.entry_dir / SIDECAR).read_text())
    evil_meta = json.loads((attacker.entry_dir / SIDECAR).read_text())
    src = attacker.entry_dir / evil_meta["artifact"]
    dst = victim.entry_dir / meta["artifact"]
    shutil.copyfile(src, dst)
    data = dst.read_bytes()
    meta["artifact_size"] = len(data)
    meta["artifact_sha256"] = hashlib.sha256(data).hexdigest()
    meta["format"] = format_
    if format_ != 2:
        meta.pop("hmac_sha256")
    (victim.entry_dir / SIDECAR).write_text(json.dumps(meta, indent=2))


# ---------------------------------------------------------------- the swap


def test_swapped_artifact_and_sidecar_fail_loudly_on_restart(
    models: tuple[TinyModel, TinyModel],
    key_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, evil = models
    cache_dir = tmp_path / "cache"
    victim = _build(good, cache_dir)
    attacker = _build(evil, tmp_path / "attacker-cache")
    _swap(victim, attacker)

    # restart: a new engine on the same cache folder
    builder = CountingBuilder()
    seen: list[BuildStatus] = []
    unused = OnnxRuntimeEngine(good.path, intra_op_threads=1)
    with caplog.at_level(logging.ERROR), pytest.raises(CacheTrustError) as err:
        CachedEngine(good.path, builder, cache_dir, fallback=unused, on_progress=seen.append)
    text = str(err.value)
    assert str(victim.entry_dir) in text
    assert "not trusted" in text and "does not verify" in text and "Refusing to load" in text
    assert f"rm -r '{victim.entry_dir}'" in text and str(key_file) in text
    assert builder.loads == 0 and builder.builds == 0  # the swapped artifact was never loaded
    assert seen[-1].stage == "failed" and seen[-1].error == text
    assert any(text in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert (victim.entry_dir / SIDECAR).is_file()  # kept for inspection, not rebuilt over
    with pytest.raises(Exception, match="closed"):
        unused.infer(_x())  # the fallback handed over was released

    # the operator's fix from the message: delete the entry, start again
    shutil.rmtree(victim.entry_dir)
    again = CachedEngine(good.path, CountingBuilder(), cache_dir, background=False)
    assert again.status.serving == "build" and _serves(again, good)
    again.close()


def test_swap_refused_in_a_restarted_process(
    models: tuple[TinyModel, TinyModel], key_file: Path, tmp_path: Path
) -> None:
    """The node's path (create_engine with a cache_dir) in a fresh process: it
    exits with the reason instead of serving the attacker's model."""
    good, evil = models
    cache_dir = tmp_path / "cache"
    victim = _build(good, cache_dir)
    _swap(victim, _build(evil, tmp_path / "attacker-cache"))
    script = (
        "import sys\n"
        "from perception.core.engines import EngineConfig, create_engine\n"
        "from perception.core.errors import EngineError\n"
        "try:\n"
        f"    create_engine(EngineConfig({str(good.path)!r}, cache_dir={str(cache_dir)!r}))\n"
        "except EngineError as exc:\n"
        "    sys.exit(f'{type(exc).__name__}: {exc}')\n"
        "print('served')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PERCEPTION_ENGINE_CACHE_KEY": str(key_file)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "served" not in proc.stdout, proc
    assert "CacheTrustError" in proc.stderr and victim.entry_dir.name in proc.stderr
    assert "not trusted" in proc.stderr


def test_swap_with_an_unsigned_old_format_sidecar_is_rebuilt_not_served(
    models: tuple[TinyModel, TinyModel],
    key_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Entries of the previous version carry no tag: they are rebuilt (nothing
    from them is loaded), so dressing a swap up as one serves the right model."""
    good, evil = models
    cache_dir = tmp_path / "cache"
    victim = _build(good, cache_dir)
    _swap(victim, _build(evil, tmp_path / "attacker-cache"), format_=1)
    builder = CountingBuilder()
    with caplog.at_level(logging.WARNING):
        eng = CachedEngine(good.path, builder, cache_dir, background=False)
    assert builder.builds == 1 and eng.status.serving == "build"
    assert _serves(eng, good) and not _serves(eng, evil)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("older version" in w and "rebuilding" in w for w in warnings), warnings
    eng.close()


def test_another_models_signed_entry_moved_in_is_refused(
    models: tuple[TinyModel, TinyModel], key_file: Path, tmp_path: Path
) -> None:
    """A genuine entry (signed with this user's key) of another model, moved
    under this model's name: the tag binds the model's sha256, so it fails."""
    good, evil = models
    cache_dir = tmp_path / "cache"
    victim = _build(good, cache_dir)
    other = _build(evil, cache_dir)
    shutil.rmtree(victim.entry_dir)
    shutil.copytree(other.entry_dir, victim.entry_dir)
    meta = json.loads((victim.entry_dir / SIDECAR).read_text())
    (victim.entry_dir / meta["artifact"]).rename(victim.entry_dir / "good.onnx")
    meta["artifact"] = "good.onnx"
    (victim.entry_dir / SIDECAR).write_text(json.dumps(meta))
    with pytest.raises(CacheTrustError, match=r"does not verify.*differs .* in model_sha256"):
        CachedEngine(good.path, CountingBuilder(), cache_dir)


def test_sidecar_forged_with_another_key_is_refused(
    models: tuple[TinyModel, TinyModel], key_file: Path, tmp_path: Path
) -> None:
    good, evil = models
    cache_dir = tmp_path / "cache"
    victim = _build(good, cache_dir)
    attacker = _build(evil, tmp_path / "attacker-cache")
    _swap(victim, attacker)
    forger = EngineCache(tmp_path / "forger-cache", key_file=tmp_path / "forger" / "k")
    meta = json.loads((victim.entry_dir / SIDECAR).read_text())
    meta["hmac_sha256"] = forger.tag(
        victim.key, meta["artifact"], meta["artifact_size"], meta["artifact_sha256"]
    )
    (victim.entry_dir / SIDECAR).write_text(json.dumps(meta))
    with pytest.raises(CacheTrustError, match="does not verify"):
        CachedEngine(good.path, CountingBuilder(), cache_dir)


def test_lost_key_is_named_in_the_refusal(
    models: tuple[TinyModel, TinyModel], key_file: Path, tmp_path: Path
) -> None:
    good, _ = models
    cache_dir = tmp_path / "cache"
    victim = _build(good, cache_dir)
    key_file.unlink()
    with pytest.raises(CacheTrustError, match="created just now") as err:
        CachedEngine(good.path, CountingBuilder(), cache_dir)
    assert "copied this cache from another user or machine" in str(err.value)
    assert victim.entry_dir.is_dir()


def test_signed_entry_loads_without_rebuild(
    models: tuple[TinyModel, TinyModel], key_file: Path, tmp_path: Path
) -> None:
    good, _ = models
    _build(good, tmp_path / "cache")
    builder = CountingBuilder()
    eng = CachedEngine(good.path, builder, tmp_path / "cache")
    assert eng.status.serving == "cache" and builder.builds == 0 and builder.loads == 1
    assert _serves(eng, good)
    eng.close()


# ---------------------------------------------------------------- folders and the key


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_cache_and_key_are_created_private(key_file: Path, tmp_path: Path) -> None:
    old = os.umask(0o002)  # a 002 umask (Debian/Ubuntu users) must not matter
    try:
        cache = EngineCache(tmp_path / "a" / "b" / "cache")
    finally:
        os.umask(old)
    for p in (tmp_path / "a", tmp_path / "a" / "b", cache.root):
        assert _mode(p) == 0o700, (p, oct(_mode(p)))
    assert cache.key_file == key_file and cache.key_created
    assert _mode(key_file) == 0o600 and _mode(key_file.parent) == 0o700
    assert len(key_file.read_text().strip()) == 64
    again = EngineCache(tmp_path / "a" / "b" / "cache")
    assert not again.key_created and again.tag(*_tag_args()) == cache.tag(*_tag_args())


def _tag_args() -> tuple[Any, ...]:
    from perception.core.engines.cache import CacheKey

    return CacheKey("0" * 64, "onnxruntime", "1", "cpu", "fp32", ()), "m.onnx", 3, "ab"


@pytest.mark.parametrize(("mode", "who"), [(0o770, "its group"), (0o707, "others")])
def test_cache_dir_writable_by_others_is_refused(
    key_file: Path, tmp_path: Path, mode: int, who: str
) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(mode)
    with pytest.raises(
        CacheTrustError, match=f"writable by {who}.*chmod 700 {re.escape(str(root))}"
    ):
        EngineCache(root)
    root.chmod(0o755)  # readable by others is not a write risk: accepted
    EngineCache(root)


@as_root
def test_cache_dir_owned_by_another_user_is_refused(key_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    os.chown(root, OTHER_UID, -1)
    with pytest.raises(CacheTrustError, match=f"owned by uid {OTHER_UID}"):
        EngineCache(root)


def test_folder_above_writable_by_others_is_refused_unless_sticky(
    key_file: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(
        CacheTrustError, match=f"folder {re.escape(str(shared))} above .*no sticky bit"
    ):
        EngineCache(shared / "cache")
    shared.chmod(0o1777)  # like /tmp: others cannot rename what is ours
    EngineCache(shared / "cache")


@as_root
def test_folder_above_owned_by_another_user_is_refused(key_file: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    (theirs / "cache").mkdir(mode=0o700)
    os.chown(theirs, OTHER_UID, -1)
    with pytest.raises(
        CacheTrustError, match=f"{re.escape(str(theirs))} above .* owned by uid {OTHER_UID}"
    ):
        EngineCache(theirs / "cache")


def test_key_file_readable_by_others_is_refused(key_file: Path, tmp_path: Path) -> None:
    EngineCache(tmp_path / "cache")
    key_file.chmod(0o644)
    with pytest.raises(
        CacheTrustError, match=f"read or written by others.*chmod 600 {re.escape(str(key_file))}"
    ):
        EngineCache(tmp_path / "cache")


def test_key_folder_writable_by_others_is_refused(key_file: Path, tmp_path: Path) -> None:
    EngineCache(tmp_path / "cache")
    key_file.parent.chmod(0o777)
    with pytest.raises(CacheTrustError, match=r"key folder .* writable by group and others"):
        EngineCache(tmp_path / "cache")


@as_root
def test_key_file_owned_by_another_user_is_refused(key_file: Path, tmp_path: Path) -> None:
    EngineCache(tmp_path / "cache")
    os.chown(key_file, OTHER_UID, -1)
    with pytest.raises(CacheTrustError, match=f"owned by uid {OTHER_UID}.*forge"):
        EngineCache(tmp_path / "cache")


def test_key_inside_the_cache_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CacheTrustError, match="inside the cache folder"):
        EngineCache(tmp_path / "cache", key_file=tmp_path / "cache" / "k")


def test_damaged_key_is_refused(key_file: Path, tmp_path: Path) -> None:
    EngineCache(tmp_path / "cache")
    key_file.write_text("short\n")
    with pytest.raises(CacheTrustError, match="not 64 hex digits"):
        EngineCache(tmp_path / "cache")


def test_key_creation_race_keeps_one_key(tmp_path: Path) -> None:
    path = tmp_path / "k" / "key"
    a, created_a = load_or_create_key(path)
    b, created_b = load_or_create_key(path)
    assert a == b and len(a) == 32 and created_a and not created_b


def test_private_dir_helpers(tmp_path: Path) -> None:
    p = ensure_private_dir(tmp_path / "x" / "y", "test folder")
    assert p.is_dir() and _mode(p) == 0o700
    (tmp_path / "file").write_text("")
    with pytest.raises(CacheTrustError, match="not a folder"):
        check_private_dir(tmp_path / "file", "test folder")


def test_tensorrt_provider_cache_folder_is_checked(tmp_path: Path) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    open_dir = tmp_path / "trt"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(CacheTrustError, match="TensorRT provider cache folder"):
        OnnxRuntimeEngine(tm.path, trt_cache_dir=str(open_dir))


# ---------------------------------------------------------------- code-bearing formats


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_code_bearing_warning_once_per_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt2"
    with caplog.at_level(logging.WARNING):
        assert warn_code_bearing(a, "torchscript")
        assert not warn_code_bearing(a, "torchscript")
        assert not warn_code_bearing(tmp_path / "." / "a.pt", "torchscript")  # same file
        assert warn_code_bearing(b, "exported_program")
    msgs = _warnings(caplog)
    assert len(msgs) == 2
    assert str(a) in msgs[0] and "TorchScript" in msgs[0] and "ONNX" in msgs[0]
    assert "TensorRT plans" in msgs[0] and "trust" in msgs[0]
    assert "torch.export" in msgs[1]


def _fake_torch(loaded: list[str]) -> Any:
    class Module:
        def to(self, device: Any) -> Module:
            return self

        def module(self) -> Module:
            return self

    def jit_load(path: str, map_location: Any = None, _extra_files: Any = None) -> Module:
        loaded.append(path)
        return Module()

    def export_load(path: str) -> Module:
        loaded.append(path)
        return Module()

    return SimpleNamespace(
        jit=SimpleNamespace(load=jit_load), export=SimpleNamespace(load=export_load)
    )


def _zip(path: Path, *members: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for m in members:
            z.writestr(m, b"x")
    return path


@pytest.mark.parametrize(
    ("name", "members", "word"),
    [
        ("model.torchscript", ("model/code/__torch__.py", "model/constants.pkl"), "TorchScript"),
        ("model.pt2", ("model/archive_format", "model/models/model.json"), "torch.export"),
    ],
)
def test_loading_a_torch_model_warns_once(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    members: tuple[str, ...],
    word: str,
) -> None:
    from perception.core.engines.torch_engine import load_torch_model

    path = _zip(tmp_path / name, *members)
    loaded: list[str] = []
    torch = _fake_torch(loaded)
    with caplog.at_level(logging.WARNING):
        load_torch_model(path, torch, "cpu")
        load_torch_model(path, torch, "cpu")
    assert loaded == [str(path)] * 2
    msgs = [m for m in _warnings(caplog) if str(path) in m]
    assert len(msgs) == 1 and word in msgs[0] and "runs" in msgs[0]


def test_refused_pickle_checkpoint_is_not_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from perception.core.engines.torch_engine import load_torch_model
    from perception.core.errors import ModelFileError

    path = _zip(tmp_path / "ckpt.pt", "ckpt/data.pkl", "ckpt/version")
    loaded: list[str] = []
    with pytest.raises(ModelFileError, match="not TorchScript"):
        load_torch_model(path, _fake_torch(loaded), "cpu")
    assert loaded == [] and not [m for m in _warnings(caplog) if str(path) in m]


def test_onnx_model_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tm = write_tiny_model(tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING):
        OnnxRuntimeEngine(tm.path, intra_op_threads=1).close()
    assert not [m for m in _warnings(caplog) if "hold no code" in m]
