"""Engine cache: compiled engines on disk, built in the background.

Compiling a model for TensorRT takes minutes; a node must not stall that long.
`CachedEngine` therefore

1. hashes the model file and looks for a cache entry keyed by (model sha256,
   runtime, runtime version, device name, precision, input shape);
2. on a hit loads the artifact directly (the next start after a build);
3. on a miss serves a fallback engine (e.g. ONNX Runtime CPU on the original
   model) while a background thread builds, stores and loads the artifact,
   then swaps it in atomically;
4. treats a corrupt or incompatible entry as a miss: it logs a warning,
   deletes the entry and rebuilds;
5. refuses, with an error naming the entry and the reason, an entry it
   cannot authenticate (CacheTrustError): nothing from it is loaded, and it
   is left in place for inspection.

An entry is a folder `<stem>.<runtime>.<key digest>/` holding the artifact and
`entry.json` (the key fields, the artifact's sha256 and size, and an
HMAC-SHA256 over the expected key and those artifact fields made with the
per-user key of `trust.default_key_file`, which lives outside the cache).
Anyone able to rewrite both the artifact and `entry.json` still cannot make
a tag that verifies, nor move another model's entry under this key. It is
written in a temporary folder and renamed into place, so a crash mid-build
leaves no half entry, and two processes building the same key cannot
corrupt it. The cache folder is created 0700 and refused when others could
write it (`trust.check_private_dir`).

Which failures rebuild and which refuse: an entry whose `entry.json` is
missing, unreadable or of another format version (older versions wrote no
tag) claims nothing, and one whose tag verifies was written by this user's
cache, so a damaged or unloadable artifact in it is rebuilt with a warning.
A well-formed `entry.json` whose tag does not verify was changed or written
by someone else (or with another key): rebuilding would hide that from the
operator and the writer could retry, so it is refused instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.engines._common import one_line
from perception.core.engines.base import BuildStatus, Engine, EngineInfo
from perception.core.engines.pixel_input import PixelInput
from perception.core.engines.trust import (
    CacheTrustError,
    default_key_file,
    ensure_private_dir,
    load_or_create_key,
)
from perception.core.errors import EngineBuildError, EngineError, ModelFileError

__all__ = [
    "BuildStatus",
    "Builder",
    "CacheEntryError",
    "CacheKey",
    "CacheTrustError",
    "CachedEngine",
    "EngineCache",
    "ProgressFn",
    "StatusFn",
    "default_cache_dir",
    "default_key_file",
    "sha256_file",
]

_log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
"""Builder side: progress(fraction in [0, 1], message)."""

FORMAT_VERSION = 2  # 1: no authentication tag (rebuilt on sight)
SIDECAR = "entry.json"
TAG = "hmac_sha256"


def default_cache_dir() -> Path:
    """$PERCEPTION_ENGINE_CACHE, else $XDG_CACHE_HOME/perception/engines, else ~/.cache/..."""
    env = os.environ.get("PERCEPTION_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "perception" / "engines"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything an artifact depends on. Equal keys -> interchangeable artifacts."""

    model_sha256: str
    runtime: str
    runtime_version: str
    device: str
    precision: str
    input_shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @property
    def digest(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]


class CacheEntryError(EngineError):
    """A cache entry exists but cannot be used (corrupt, incompatible): rebuilt.

    An entry that fails authentication raises CacheTrustError instead."""


class Builder(ABC):
    """Turns a model file into a runtime artifact, and loads that artifact.

    Subclasses set `runtime` (a short name used in keys and folder names) and
    `suffix` (the artifact's file extension), and report the runtime version
    and device name that make an artifact non-portable.
    """

    runtime: str = "unknown"
    suffix: str = ".bin"

    def __init__(self, precision: str = "fp32", input_shape: tuple[int, ...] = ()) -> None:
        self.precision = precision
        self.input_shape = tuple(int(d) for d in input_shape)

    @abstractmethod
    def runtime_version(self) -> str: ...

    @abstractmethod
    def device_name(self) -> str: ...

    @abstractmethod
    def build(self, model_path: Path, artifact_path: Path, progress: ProgressFn) -> None:
        """Write the artifact; call `progress` now and then (it raises to cancel)."""

    @abstractmethod
    def load(self, artifact_path: Path) -> Engine: ...


class EngineCache:
    """Artifacts under one private folder, with authenticated sidecars.

    Args:
        cache_dir: the folder (default `default_cache_dir()`); created 0700,
            refused (CacheTrustError) when others could write it.
        key_file: the per-user secret (default `default_key_file()`, outside
            the cache); created 0600 on first use, refused when others could
            read or write it or when it lies inside `cache_dir`.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        ensure_private_dir(self.root, "engine cache folder")
        self.key_file = Path(key_file) if key_file is not None else default_key_file()
        self._secret, self.key_created = load_or_create_key(self.key_file, self.root)
        self._clean_stale_tmp()

    # -- keys and paths
    def key(self, model_path: str | os.PathLike[str], builder: Builder) -> CacheKey:
        p = Path(model_path)
        if not p.is_file():
            raise ModelFileError(f"model file not found: {p}")
        return CacheKey(
            model_sha256=sha256_file(p),
            runtime=builder.runtime,
            runtime_version=str(builder.runtime_version()),
            device=str(builder.device_name()),
            precision=builder.precision,
            input_shape=builder.input_shape,
        )

    def entry_dir(self, key: CacheKey, stem: str) -> Path:
        return self.root / f"{_safe(stem)}.{key.runtime}.{key.digest}"

    def tag(self, key: CacheKey, artifact: object, size: object, sha256: object) -> str:
        """HMAC-SHA256 (hex) binding an artifact's name, size and sha256 to `key`
        (which holds the model's sha256) under this user's secret."""
        text = json.dumps(
            {
                "format": FORMAT_VERSION,
                "key": key.as_dict(),
                "artifact": artifact,
                "artifact_size": size,
                "artifact_sha256": sha256,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    # -- read
    def lookup(self, key: CacheKey, stem: str, suffix: str) -> Path | None:
        """Artifact path of a verified entry; None if absent.

        Raises CacheEntryError for a corrupt or incompatible entry (rebuild
        it) and CacheTrustError for one that fails authentication (refuse)."""
        entry = self.entry_dir(key, stem)
        if not entry.exists():
            return None
        if entry.is_symlink() or not entry.is_dir():
            raise CacheEntryError(f"{entry.name}: not a folder")
        sidecar = entry / SIDECAR
        try:
            meta = json.loads(sidecar.read_text())
        except FileNotFoundError:
            raise CacheEntryError(f"{entry.name}: no {SIDECAR} (incomplete entry)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CacheEntryError(f"{entry.name}: unreadable {SIDECAR}: {one_line(exc)}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            why = " (an older version's entry, without authentication)" if got == 1 else ""
            raise CacheEntryError(f"{entry.name}: format {got!r}, expected {FORMAT_VERSION}{why}")
        name = meta.get("artifact")
        want_size = meta.get("artifact_size")
        want_sha = meta.get("artifact_sha256")
        tag = meta.get(TAG)
        if not isinstance(tag, str) or not hmac.compare_digest(
            tag, self.tag(key, name, want_size, want_sha)
        ):
            raise CacheTrustError(self._untrusted(entry, key, meta, tag))
        # authenticated: this user's cache wrote this entry for this key
        got_key = meta.get("key")
        if got_key != key.as_dict():  # informational copy edited: inconsistent
            raise CacheEntryError(
                f"{entry.name}: key mismatch in {', '.join(_key_diff(key, meta))}"
            )
        if not isinstance(name, str) or name != Path(name).name or not name.endswith(suffix):
            raise CacheEntryError(f"{entry.name}: bad artifact name {name!r}")
        artifact = entry / name
        if artifact.is_symlink() or not artifact.is_file():
            raise CacheEntryError(f"{entry.name}: artifact {name} missing")
        size = artifact.stat().st_size
        if size != want_size:
            raise CacheEntryError(
                f"{entry.name}: artifact is {size} bytes, expected {want_size} (changed since "
                "this cache wrote it)"
            )
        if sha256_file(artifact) != want_sha:
            raise CacheEntryError(
                f"{entry.name}: artifact sha256 does not match {SIDECAR} (changed since this "
                "cache wrote it: disk damage or tampering)"
            )
        return artifact

    def _untrusted(self, entry: Path, key: CacheKey, meta: dict[str, Any], tag: object) -> str:
        """The refusal text: which entry, what failed, what it means, the fix."""
        if not isinstance(tag, str):
            what = f"{SIDECAR} has no authentication tag ({TAG}) although it claims format "
            what += f"{FORMAT_VERSION}"
        else:
            what = f"the authentication tag in {SIDECAR} does not verify"
        diff = _key_diff(key, meta)
        if diff:
            what += f", and its key differs from this model's in {', '.join(diff)}"
        cause = (
            f"the key file {self.key_file} was created just now, so the entry was written "
            "with another key or by someone else"
            if self.key_created
            else f"the entry was changed or written by someone without this user's cache key "
            f"({self.key_file}), or written with another key"
        )
        return (
            f"engine cache entry {entry} is not trusted: {what}; {cause}. Refusing to load "
            f"it. Inspect it, then delete it to rebuild (`rm -r '{entry}'`); if you replaced "
            "the key file or copied this cache from another user or machine, deleting the "
            "entry is the fix"
        )

    # -- write
    def store(
        self,
        key: CacheKey,
        builder: Builder,
        model_path: Path,
        progress: ProgressFn,
    ) -> Path:
        """Build into a temporary folder, rename it into place, and return the
        artifact as `lookup` verifies it (ours, or a concurrent winner's)."""
        final = self.entry_dir(key, model_path.stem)
        tmp = self.root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(mode=0o700)
        try:
            artifact = tmp / f"{_safe(model_path.stem)}{builder.suffix}"
            t0 = time.monotonic()
            builder.build(model_path, artifact, progress)
            if not artifact.is_file() or artifact.stat().st_size == 0:
                raise EngineBuildError(f"{builder.runtime} build wrote no artifact")
            size = artifact.stat().st_size
            sha = sha256_file(artifact)
            meta = {
                "format": FORMAT_VERSION,
                "key": key.as_dict(),
                "artifact": artifact.name,
                "artifact_size": size,
                "artifact_sha256": sha,
                TAG: self.tag(key, artifact.name, size, sha),
                "model_file": str(model_path),
                "build_seconds": round(time.monotonic() - t0, 3),
                "created_unix": int(time.time()),
            }
            (tmp / SIDECAR).write_text(json.dumps(meta, indent=2, sort_keys=True))
            self.remove(final)
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / SIDECAR).is_file():  # not a concurrent winner: a real error
                    raise
                _log.info("engine cache: %s was stored by another process", final.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        verified = self.lookup(key, model_path.stem, builder.suffix)
        if verified is None:
            raise EngineBuildError(f"{final.name} vanished right after it was stored")
        return verified

    def remove(self, entry: Path) -> None:
        """Delete an entry folder (rename first so no reader sees half of it)."""
        if not entry.exists():
            return
        trash = self.root / f".trash-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(entry, trash)
        except OSError:
            trash = entry
        shutil.rmtree(trash, ignore_errors=True)

    def _clean_stale_tmp(self) -> None:
        for p in self.root.glob(".t*-*-*"):
            if not p.name.startswith((".tmp-", ".trash-")):
                continue
            try:
                pid = int(p.name.split("-")[1])
            except ValueError:
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True)


def _key_diff(key: CacheKey, meta: dict[str, Any]) -> list[str]:
    """Names of the key fields where a sidecar's copy differs from `key`."""
    want = key.as_dict()
    got = meta.get("key")
    return sorted(k for k in want if not isinstance(got, dict) or got.get(k) != want[k])


def _safe(stem: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:64] or "model"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


StatusFn = Callable[[BuildStatus], None]


class _Cancelled(Exception):
    pass


@dataclass
class _Slot:
    engine: Engine
    inflight: int = 0
    retired: bool = False


class CachedEngine(Engine):
    """An Engine that starts on a fallback and swaps to a cached/compiled one.

    `infer` is thread-safe and never waits for a build: it runs on whichever
    engine is current. A swapped-out engine is closed once its in-flight calls
    return. `info` follows the current engine, and `generation` increments on
    every swap, so a pipeline can re-read input size and precision.

    Args:
        model_path: the source model the builder compiles.
        builder: the runtime-specific build/load step.
        cache: an EngineCache or its folder.
        fallback: an Engine (owned from now on: closed when swapped out, or
            at once on a cache hit), or a zero-argument factory called only on
            a cache miss (so a hit never pays for it). None: `infer` raises
            EngineError until the build is done.
        on_progress: called with every BuildStatus change, from the build
            thread; exceptions in it are logged and ignored.
        background: False builds in the calling thread (tools, tests).

    Raises CacheTrustError when the cache folder, its key or the entry for
    this model cannot be trusted (see the module docstring); a corrupt entry
    is rebuilt with a warning instead.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        builder: Builder,
        cache: EngineCache | str | os.PathLike[str] | None = None,
        *,
        fallback: Engine | Callable[[], Engine] | None = None,
        on_progress: StatusFn | None = None,
        background: bool = True,
    ) -> None:
        self._model = Path(model_path)
        self._builder = builder
        self._cache = cache if isinstance(cache, EngineCache) else EngineCache(cache)
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._slot: _Slot | None = None
        self.generation = 0  # Engine.generation: +1 on every swap (_install)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._status = BuildStatus("loading_cache", 0.0, "looking up the engine cache", "none")
        self._notify()

        self._key = self._cache.key(self._model, builder)
        self._entry = self._cache.entry_dir(self._key, self._model.stem)
        try:
            engine, artifact = self._load_cached()
        except CacheTrustError:
            if isinstance(fallback, Engine):
                _close_quietly(fallback)  # owned by us; the caller never gets this object
            raise
        if engine is not None:
            self._install(engine)
            self._set(
                "ready",
                1.0,
                f"loaded cached {builder.runtime} engine",
                serving="cache",
                artifact=str(artifact),
            )
            self._done.set()
            if isinstance(fallback, Engine):
                _close_quietly(fallback)  # owned by us and not needed
            return

        fb = fallback() if callable(fallback) and not isinstance(fallback, Engine) else fallback
        if fb is not None:
            self._install(fb)
        self._set(
            "building",
            0.0,
            f"building {builder.runtime} engine for {self._model.name}",
            serving="fallback" if fb is not None else "none",
        )
        if background:
            self._thread = threading.Thread(
                target=self._build, name=f"engine-build-{self._model.stem}", daemon=True
            )
            self._thread.start()
        else:
            self._build()

    # ------------------------------------------------------------ public
    @property
    def info(self) -> EngineInfo:
        slot = self._slot
        if slot is None:
            raise EngineError(self._not_ready())
        return slot.engine.info

    @property
    def build_status(self) -> BuildStatus:
        """Always set: the cache lookup, build, load or failure in progress."""
        return self._status

    @property
    def status(self) -> BuildStatus:
        """Alias of `build_status` (older callers)."""
        return self._status

    @property
    def key(self) -> CacheKey:
        return self._key

    @property
    def entry_dir(self) -> Path:
        return self._entry

    @property
    def current(self) -> Engine | None:
        """The engine serving right now (for inspection; do not close it)."""
        slot = self._slot
        return slot.engine if slot is not None else None

    @property
    def graph_rewrites(self) -> int:
        """The serving engine's rewrites (e.g. an ONNX Runtime fallback's)."""
        engine = self.current
        return engine.graph_rewrites if engine is not None else 0

    def describe(self) -> dict[str, str]:
        """`Engine.describe`; before any engine serves, the name, runtime,
        device and precision come from the build instead of `info`."""
        if self._slot is not None:
            with contextlib.suppress(EngineError):  # closed or swapped meanwhile
                return super().describe()
        out = {
            "engine": self._model.stem,
            "runtime": self._builder.runtime,
            "device": self._key.device,
            "precision": self._builder.precision,
        }
        out.update(self._status.describe())
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build is ready or failed; False on timeout. For tools/tests."""
        return self._done.wait(timeout)

    def enable_pixel_input(self, pixel: PixelInput, release_float: bool = True) -> str | None:
        """Not with a cache: the engine serving can change between two calls
        (fallback -> built engine), and built engines take float input."""
        return "the engine cache swaps engines at run time; cached engines take float input"

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            if self._closed:
                raise EngineError(f"{self._model.name}: engine is closed")
            slot = self._slot
            if slot is None:
                raise EngineError(self._not_ready())
            slot.inflight += 1
        try:
            return slot.engine.infer(batch)
        finally:
            close_it = False
            with self._lock:
                slot.inflight -= 1
                close_it = slot.retired and slot.inflight == 0
            if close_it:
                _close_quietly(slot.engine)

    def close(self) -> None:
        self._cancel.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            slot, self._slot = self._slot, None
            close_now = slot is not None and slot.inflight == 0
            if slot is not None:
                slot.retired = True  # a call still running closes it on return
        if slot is not None and close_now:
            _close_quietly(slot.engine)
        if not self._status.done:
            self._set("closed", self._status.fraction, "closed before the build finished")
        self._done.set()

    # ------------------------------------------------------------ internals
    def _not_ready(self) -> str:
        st = self._status
        if st.stage == "failed":
            return (
                f"{self._model.name}: engine build failed and no fallback is configured: {st.error}"
            )
        return (
            f"{self._model.name}: no engine ready yet ({st.stage} {st.fraction:.0%}) "
            "and no fallback engine configured"
        )

    def _load_cached(self) -> tuple[Engine | None, Path | None]:
        try:
            artifact = self._cache.lookup(self._key, self._model.stem, self._builder.suffix)
            if artifact is None:
                return None, None
            self._set("loading_cache", 0.5, f"loading cached engine {self._entry.name}")
            try:
                return self._builder.load(artifact), artifact
            except Exception as exc:  # any loader failure means: rebuild
                raise CacheEntryError(
                    f"{self._entry.name}: cached artifact failed to load: "
                    f"{type(exc).__name__}: {one_line(exc)}"
                ) from None
        except CacheTrustError as exc:
            _log.error("engine cache: %s", exc)
            self._set("failed", 0.0, "cache entry refused", error=str(exc))
            raise
        except CacheEntryError as exc:
            _log.warning("engine cache: %s; deleting the entry and rebuilding", exc)
            self._cache.remove(self._entry)
        except OSError as exc:
            _log.warning("engine cache: cannot read %s (%s); rebuilding", self._entry, exc)
        return None, None

    def _build(self) -> None:
        try:
            artifact = self._cache.store(self._key, self._builder, self._model, self._progress)
            self._check_cancel()
            self._set("loading", 0.95, f"loading built engine {self._entry.name}")
            try:
                engine = self._builder.load(artifact)
            except Exception:
                self._cache.remove(self._entry)  # unloadable: do not keep it for next start
                raise
        except _Cancelled:
            return
        except Exception as exc:  # reported in status; the fallback keeps serving
            reason = f"{type(exc).__name__}: {one_line(exc)}"
            _log.error(
                "engine build for %s (%s) failed: %s; %s",
                self._model.name,
                self._builder.runtime,
                reason,
                "fallback keeps serving" if self._slot is not None else "no fallback configured",
            )
            self._set("failed", self._status.fraction, "build failed", error=reason)
            self._done.set()
            return
        if not self._install(engine):
            _close_quietly(engine)
            return
        self._set(
            "ready",
            1.0,
            f"serving built {self._builder.runtime} engine",
            serving="build",
            artifact=str(artifact),
        )
        self._done.set()

    def _install(self, engine: Engine) -> bool:
        """Make `engine` current; retire (and maybe close) the previous one."""
        with self._lock:
            if self._closed:
                return False
            old, self._slot = self._slot, _Slot(engine)
            self.generation += 1
            close_old = False
            if old is not None:
                old.retired = True
                close_old = old.inflight == 0
        if old is not None and close_old:
            _close_quietly(old.engine)
        return True

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise _Cancelled

    def _progress(self, fraction: float, message: str) -> None:
        self._check_cancel()
        frac = min(max(float(fraction), 0.0), 1.0) * 0.9  # the last 10%: save + load
        self._set("building", frac, message)

    def _set(self, stage: str, fraction: float, message: str, **changes: Any) -> None:
        self._status = replace(
            self._status,
            stage=stage,
            fraction=fraction,
            message=message,
            elapsed_s=round(time.monotonic() - self._t0, 3),
            **changes,
        )
        self._notify()

    def _notify(self) -> None:
        if self._on_progress is None:
            return
        try:
            self._on_progress(self._status)
        except Exception:  # a broken callback must not break the build
            _log.exception("engine cache: on_progress callback raised")


def _close_quietly(engine: Engine) -> None:
    with contextlib.suppress(Exception):
        engine.close()
