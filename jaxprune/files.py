"""Files through `etils.epath`, so an output or input path may be `gs://bucket/...` wherever a local path works.

`gs://` needs gcsfs (`pip install "jaxprune[gcs]"`); without it epath raises an ImportError naming fsspec / gcsfs at
the first access. Local paths go through the same calls (epath's backend for them is `os`), so one code path serves
both and the tests exercise the remote branch with `etils.epath.testing.mock_epath`.

Whole-file writes are atomic: the bytes go to a temporary name beside the target, which is then renamed over it, so a
reader (or a resumed run) never sees half a file. On a local disk the rename is atomic. On GCS there is no rename:
epath copies the object and deletes the temporary one. An object upload is itself all-or-nothing, so the target is
still never torn; a crash between copy and delete only leaves `<path>.tmp` behind, which the next write replaces.
"""

from __future__ import annotations

import errno
import glob as _glob
import os
from typing import Iterable

from etils import epath


def is_local(path: str | os.PathLike) -> bool:
    """False for `scheme://...` paths (gs://, s3://, ...): no fsync, no partial rewrites, no `os` calls on them."""
    return "://" not in os.fspath(path)


def absolute(path: str) -> str:
    """A local path made absolute (orbax wants absolute checkpoint folders); a `gs://` path as it is (`abspath`
    would turn it into `<cwd>/gs:/bucket/...`)."""
    return os.path.abspath(path) if is_local(path) else path


def parent(path: str) -> epath.Path:
    """The folder `path` is in (`.` for a bare local file name)."""
    return epath.Path(absolute(path)).parent


def make_dir(folder: str, *, for_path: str | None = None) -> None:
    """Creates a local folder and its parents. A file where a folder should be (`--output=/etc/hostname/x.jsonl`) is
    reported as such, naming what was to be written, rather than as os.makedirs' bare 'File exists'. Nothing is done
    for `gs://`: a bucket has no folders (and gcsfs would create a missing bucket rather than fail)."""
    if not is_local(folder):
        return
    try:
        epath.Path(folder).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(errno.ENOTDIR, f"is a file, not a folder, so {for_path or folder} cannot be "
                                 "written there", folder) from None


def make_parent(path: str) -> None:
    """Creates the folder an output file goes into (see `make_dir`)."""
    make_dir(os.fspath(parent(path)), for_path=path)


def exists(path: str) -> bool:
    return epath.Path(path).exists()


def is_file(path: str) -> bool:
    return epath.Path(path).is_file()


def is_dir(path: str) -> bool:
    return epath.Path(path).is_dir()


def read_text(path: str) -> str:
    return epath.Path(path).read_text(encoding="utf-8")


def glob(pattern: str) -> list[str]:
    """Paths matching `pattern`. Locally the full `glob` syntax; on GCS a wildcard only in the last component
    (epath lists one folder; a recursive listing of a bucket could be thousands of requests)."""
    if is_local(pattern):
        return _glob.glob(pattern)
    folder, name = pattern.rsplit("/", 1)
    if not any(c in name for c in "*?["):
        return [pattern] if exists(pattern) else []
    return [os.fspath(p) for p in epath.Path(folder).glob(name)]


def write_atomic(path: str, chunks: str | bytes | Iterable[str], *, temporary: str | None = None) -> None:
    """Writes `chunks` (text, bytes, or an iterable of text pieces) to `path` under `temporary` (default
    `<path>.tmp`; pass a per-host name when several hosts write the same file), then renames it into place. Local
    files are fsync'd before the rename, so a crash leaves the old file or the new one."""
    make_parent(path)
    temporary = temporary or f"{path}.tmp"
    binary = isinstance(chunks, bytes)
    with epath.Path(temporary).open("wb" if binary else "w") as f:
        for chunk in [chunks] if isinstance(chunks, (str, bytes)) else chunks:
            f.write(chunk)
        if is_local(temporary):
            f.flush()
            os.fsync(f.fileno())
    epath.Path(temporary).replace(path)


def upload_dir(local: str, remote: str) -> None:
    """Copies every file of a local folder into a `gs://` folder (each object appears whole once uploaded)."""
    for name in sorted(os.listdir(local)):
        epath.Path(local, name).copy(epath.Path(remote) / name, overwrite=True)


def download_dir(remote: str, local: str) -> str:
    """Copies a `gs://` folder's files (or one file) into a local folder once; returns the local copy's path.
    A copy that finished is reused: files are copied under a temporary name and renamed."""
    source = epath.Path(remote)
    if source.is_file():
        target = os.path.join(local, source.name)
        names = [(source, target)]
    else:
        target = local
        names = [(entry, os.path.join(local, entry.name)) for entry in source.iterdir() if entry.is_file()]
    os.makedirs(local, exist_ok=True)
    for entry, destination in names:
        if not os.path.exists(destination):
            entry.copy(epath.Path(destination + ".tmp"), overwrite=True)
            os.replace(destination + ".tmp", destination)
    return target
