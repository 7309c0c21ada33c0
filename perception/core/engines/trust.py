"""What the engines trust on disk: private folders, the cache key, code-bearing models.

The engine cache loads artifacts that a runtime deserialises (TensorRT plans,
ONNX graphs, Torch-TensorRT programs). A checksum stored beside the artifact
proves nothing to an attacker who can write both, so entries carry an HMAC
made with a per-user secret that lives OUTSIDE the cache, in the user's
config folder:

    $PERCEPTION_ENGINE_CACHE_KEY, else
    $XDG_CONFIG_HOME/perception/engine-cache.key, else
    ~/.config/perception/engine-cache.key

Why there and not beside the cache (e.g. `<cache>/../.key`): caches are what
gets shared, mounted as volumes, restored by CI, copied between machines or
pointed at /tmp; whoever can write or copy the cache tree (its parent
included) must not hold the key. The config folder is per user and private,
and someone who can write it can already change the user's shell start-up
files, so the key adds nothing to defend there. Folders that hold the cache
or the key must be owned by this user and not writable by anyone else
(checked with os.stat, folders above them included); the key file must be
0600.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import threading
import uuid
from pathlib import Path

from perception.core.errors import EngineError

__all__ = [
    "CacheTrustError",
    "check_private_dir",
    "default_key_file",
    "ensure_private_dir",
    "load_or_create_key",
    "warn_code_bearing",
]

_log = logging.getLogger(__name__)

KEY_ENV = "PERCEPTION_ENGINE_CACHE_KEY"
_KEY_HEX = 64  # 32 random bytes


class CacheTrustError(EngineError):
    """The engine cache, its key or one of its entries cannot be trusted.

    Unlike a corrupt entry (rebuilt with a warning) this is never repaired
    automatically: the message names what is wrong and the fix."""


def default_key_file() -> Path:
    """$PERCEPTION_ENGINE_CACHE_KEY, else
    $XDG_CONFIG_HOME (or ~/.config)/perception/engine-cache.key."""
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "perception" / "engine-cache.key"


def _euid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def _private_group(gid: int, uid: int) -> bool:
    """True for a user-private group (Debian/Ubuntu umask 002 scheme): the
    user's primary group with no other listed members."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return user.pw_gid == gid and all(m == user.pw_name for m in group.gr_mem)


def _ancestors(path: Path) -> list[Path]:
    """Folders above `path`, both as written and with links resolved."""
    seen: dict[Path, None] = {}
    for p in (path.absolute(), path.resolve()):
        for a in p.parents:
            seen.setdefault(a, None)
    return list(seen)


def check_private_dir(path: str | os.PathLike[str], what: str = "engine cache folder") -> None:
    """Refuse a folder someone else could change: it must be a folder owned by
    this user and not writable by group or others; every folder above it must
    belong to this user or root and be writable by others only with the
    sticky bit (like /tmp), else whoever can write there could swap it."""
    p = Path(path)
    uid = _euid()
    if uid < 0:  # no POSIX ownership (Windows): nothing to check with os.stat
        return
    try:
        st = os.stat(p)
    except OSError as exc:
        raise CacheTrustError(f"cannot check the {what} {p}: {exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CacheTrustError(f"the {what} {p} is not a folder")
    if st.st_uid != uid:
        raise CacheTrustError(
            f"the {what} {p} is owned by uid {st.st_uid}, not by this user (uid {uid}): its "
            f"owner could replace what is loaded from it; use a folder of your own, or "
            f"`chown -R {uid} {p}` if it is yours"
        )
    if st.st_mode & 0o022:
        who = (
            "group and others"
            if st.st_mode & 0o022 == 0o022
            else ("others" if st.st_mode & 0o002 else "its group")
        )
        raise CacheTrustError(
            f"the {what} {p} is writable by {who} (mode {stat.S_IMODE(st.st_mode):o}): they "
            f"could replace what is loaded from it; fix: `chmod 700 {p}`"
        )
    for a in _ancestors(p):
        try:
            ast = os.stat(a)
        except OSError:
            continue  # an unreadable folder above: nothing to learn from it
        if ast.st_uid not in (0, uid):
            raise CacheTrustError(
                f"the folder {a} above the {what} {p} is owned by uid {ast.st_uid}: its owner "
                f"could rename and replace {p}; use a folder outside it"
            )
        sticky = bool(ast.st_mode & stat.S_ISVTX)
        if sticky:
            continue
        if ast.st_mode & 0o002 or (
            ast.st_mode & 0o020 and not _private_group(ast.st_gid, ast.st_uid)
        ):
            raise CacheTrustError(
                f"the folder {a} above the {what} {p} is writable by others (mode "
                f"{stat.S_IMODE(ast.st_mode):o}, no sticky bit): they could rename and "
                f"replace {p}; fix: `chmod go-w {a}`, or use a folder elsewhere"
            )


def ensure_private_dir(path: str | os.PathLike[str], what: str = "engine cache folder") -> Path:
    """Create `path` (and missing parents) mode 0700, then `check_private_dir`.

    Parents are created 0700 too: with a 002 umask, mkdir -p would leave them
    group-writable, which the check then refuses."""
    p = Path(path).absolute()
    missing: list[Path] = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass  # a concurrent creator; checked below
        except OSError as exc:
            raise EngineError(f"cannot create the {what} {p}: {exc}") from None
    check_private_dir(p, what)
    return p


def _create_key(path: Path) -> bool:
    """Write a fresh key atomically; False when another process won the race."""
    text = (secrets.token_hex(_KEY_HEX // 2) + "\n").encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        try:
            os.link(tmp, path)  # fails if it exists: never overwrite a key in use
            return True
        except FileExistsError:
            return False
        except OSError:
            pass  # no hard links on this file system: create in place
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def load_or_create_key(
    path: str | os.PathLike[str], cache_root: str | os.PathLike[str] | None = None
) -> tuple[bytes, bool]:
    """The per-user cache key (32 bytes) and whether this call created it.

    Refuses a key inside `cache_root`, a key folder others can write and a
    key file others can read or write (anyone who reads it can forge entries).
    """
    p = Path(path).absolute()
    if cache_root is not None:
        root = Path(cache_root).resolve()
        if p.resolve() == root or root in p.resolve().parents:
            raise CacheTrustError(
                f"the engine cache key {p} is inside the cache folder {root}: whoever can "
                f"write or copy the cache would hold the key; keep it outside (unset "
                f"{KEY_ENV} for the default, {default_key_location()})"
            )
    ensure_private_dir(p.parent, "engine cache key folder")
    created = False
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        try:
            created = _create_key(p)
            fd = os.open(p, os.O_RDONLY)
        except OSError as exc:
            raise EngineError(
                f"cannot create the engine cache key {p}: {exc} (set {KEY_ENV} to a file "
                "in a private, writable folder)"
            ) from None
        if created:
            _log.info(
                "engine cache: created the cache key %s; keep it (entries written with it "
                "are refused under another key)",
                p,
            )
    except OSError as exc:
        raise CacheTrustError(f"cannot read the engine cache key {p}: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read(_KEY_HEX + 16)
    uid = _euid()
    if not stat.S_ISREG(st.st_mode):
        raise CacheTrustError(f"the engine cache key {p} is not a regular file")
    if uid >= 0 and st.st_uid != uid:
        raise CacheTrustError(
            f"the engine cache key {p} is owned by uid {st.st_uid}, not by this user "
            f"(uid {uid}): its owner could forge cache entries; remove it (a new one is "
            "made; entries written with the old one are then refused and must be deleted)"
        )
    if uid >= 0 and st.st_mode & 0o077:
        raise CacheTrustError(
            f"the engine cache key {p} can be read or written by others (mode "
            f"{stat.S_IMODE(st.st_mode):o}): whoever reads it can forge cache entries; "
            f"fix: `chmod 600 {p}`"
        )
    text = data.strip()
    try:
        if len(text) != _KEY_HEX:
            raise ValueError(len(text))
        secret = bytes.fromhex(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise CacheTrustError(
            f"the engine cache key {p} is not {_KEY_HEX} hex digits (damaged?): delete it to "
            "make a new one; existing cache entries are then refused and must be deleted"
        ) from None
    return secret, created


def default_key_location() -> str:
    """The default key path as text, for messages."""
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return f"{base}/perception/engine-cache.key"


# ---------------------------------------------------------------- code-bearing models

_warned: set[str] = set()
_warned_lock = threading.Lock()

_RISK = {
    "torchscript": "a TorchScript archive: loading it unpickles objects and runs the program "
    "stored in the file",
    "exported_program": "a torch.export archive: loading it unpickles objects stored in the "
    "file and runs its graph's operators",
    "pickle": "a pickled module: loading it runs arbitrary Python stored in the file",
}


def warn_code_bearing(path: str | os.PathLike[str], kind: str) -> bool:
    """Warn (once per model path) that loading `path` may run code from it.

    `kind`: 'torchscript', 'exported_program' or 'pickle'. Returns True when
    the warning was logged now, False when this path was warned about before.
    """
    key = os.path.realpath(path)
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
    _log.warning(
        "model %s is %s, with this process's rights. Load only files from a source you "
        "trust, kept writable only by you; ONNX models (runtime onnxruntime or tensorrt) "
        "and TensorRT plans hold no code to avoid this",
        path,
        _RISK.get(kind, f"a {kind} file, which can run code when loaded"),
    )
    return True
