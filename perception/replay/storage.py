"""Where replay outputs go: a local folder or any filesystem URI pyarrow opens
(s3://, gs://, hdfs://, abfs://, file://), the same code for both.

An input's outputs are written to a local staging folder first and published
whole: locally by an atomic rename, on an object store (which has no rename)
by uploading the files and then a `_SUCCESS` marker. A reader or `--resume`
takes an input as finished only once its folder (locally) or its marker
(object store) exists, so a worker killed half way leaves nothing that counts,
and a retry overwrites the same names: outputs exist once.

pyarrow is imported only for URIs, so local replay does not need it.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from perception.core.errors import PerceptionError

__all__ = [
    "MARKER",
    "OutputError",
    "is_finished",
    "is_uri",
    "join",
    "local_dir",
    "open_output",
    "publish",
    "read_text",
    "write_text",
]

MARKER = "_SUCCESS"
"""Written last into an input's folder on an object store."""


class OutputError(PerceptionError, OSError):
    """The output location cannot be opened or written (the reason says why)."""


def is_uri(out: str) -> bool:
    """True for `scheme://...` (file:// included), False for a plain path."""
    return "://" in out


def local_dir(out: str) -> Path | None:
    """The local folder of a plain path or a file:// URI; None for other URIs."""
    if not is_uri(out):
        return Path(out).expanduser().resolve()
    parsed = urlparse(out)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    return None


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a folder or a URI (pyarrow paths use '/')."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def _pyarrow_fs(out: str) -> Any:
    """pyarrow.fs (imported here: only URIs need it)."""
    try:
        return importlib.import_module("pyarrow.fs")
    except ImportError as exc:
        raise OutputError(
            f"--out {out}: writing to a URI needs pyarrow: pip install -r requirements/replay.txt"
        ) from exc


def open_output(out: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, base path inside it) for a folder or a URI."""
    fs = _pyarrow_fs(out)
    folder = local_dir(out)
    if folder is not None:
        return fs.LocalFileSystem(), str(folder)
    try:
        filesystem, path = fs.FileSystem.from_uri(out)
    except Exception as exc:  # ArrowInvalid / ArrowNotImplementedError / OSError
        raise OutputError(f"--out {out}: pyarrow cannot open this URI: {exc}") from exc
    return filesystem, path.rstrip("/")


def write_text(out: str, relpath: str, text: str) -> str:
    """Write a small text file (summaries) under `out`; returns where."""
    folder = local_dir(out)
    if folder is not None:
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return str(path)
    filesystem, base = open_output(out)
    target = join(base, relpath)
    filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(target) as f:
        f.write(text.encode("utf-8"))
    return f"{out.rstrip('/')}/{relpath}"


def read_text(out: str, relpath: str) -> str:
    """A text file under `out` (a folder or a URI)."""
    folder = local_dir(out)
    if folder is not None:
        return (folder / relpath).read_text(encoding="utf-8")
    filesystem, base = open_output(out)
    with filesystem.open_input_stream(join(base, relpath)) as f:
        data: bytes = f.read()
    return data.decode("utf-8")


def is_finished(out: str, key: str, filesystem: Any = None) -> bool:
    """Whether input `key` has been published under `out`."""
    folder = local_dir(out) if filesystem is None else None
    if folder is not None:
        return (folder / key).is_dir()
    if filesystem is None:
        filesystem, base = open_output(out)
    else:
        base = out
    fs = _pyarrow_fs(out)
    info = filesystem.get_file_info(join(base, key, MARKER))
    return bool(info.type != fs.FileType.NotFound)


def publish(staged: Path, out: str, key: str, filesystem: Any = None) -> str:
    """Make the finished folder `staged` the outputs of `key` under `out`.

    Locally `staged` should be on the same filesystem as `out` (a temporary
    name inside it): it is renamed into place; if `key` was published already
    (a retry that finished twice) the first copy stays and `staged` is removed.
    On other filesystems the files are uploaded under `out/key/`, then the
    marker; `staged` is removed. `filesystem` (with `out` a path inside it)
    bypasses URI parsing, e.g. for a SubTreeFileSystem. Returns the location.
    """
    staged = Path(staged)
    folder = local_dir(out) if filesystem is None else None
    if folder is not None:
        final = folder / key
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staged, final)
        except OSError:
            if not final.is_dir():
                if staged.stat().st_dev == folder.stat().st_dev:
                    raise
                shutil.move(str(staged), str(final))  # another filesystem: copy, then remove
            else:
                shutil.rmtree(staged, ignore_errors=True)
        return str(final)
    fs = _pyarrow_fs(out)
    if filesystem is None:
        filesystem, base = open_output(out)
    else:
        base = out
    target = join(base, key)
    filesystem.create_dir(target, recursive=True)
    fs.copy_files(str(staged), target, source_filesystem=fs.LocalFileSystem(),
                  destination_filesystem=filesystem)  # fmt: skip
    with filesystem.open_output_stream(join(target, MARKER)) as f:
        f.write(b"")
    shutil.rmtree(staged, ignore_errors=True)
    return target
