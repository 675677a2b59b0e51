"""Atomic file writing: a crash or kill leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]  # a file name, as open() takes it

__all__ = ["atomic_path", "folder_problem", "is_special_path", "json_text", "path_in_the_way", "stream_descriptor",
           "write_json", "write_text"]  # fmt: skip


def path_in_the_way(path: str | os.PathLike[str]) -> Path | None:
    """What stops a file from being written at ``path``: ``path`` itself where it is a folder, else the
    nearest parent that exists as something other than a folder (a file, a broken link); or None."""
    if (target := Path(path)).is_dir():
        return target
    return next((p for p in target.parents if (p.exists() or p.is_symlink()) and not p.is_dir()), None)


def folder_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why files cannot be written into ``folder``, or None where they can: tried (missing folders made,
    a temporary file written, all removed again), not guessed from permission bits."""
    missing = [p for p in [Path(folder), *Path(folder).parents] if not (p.exists() or p.is_symlink())]
    created: list[Path] = []
    try:
        for path in reversed(missing):
            path.mkdir()
            created.append(path)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        return f"files cannot be written into {folder} ({error.strerror or error})"
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
    return None


# Names of standard output and error: written through the open stream, so that ``>> file`` appends.
_STREAM_NAMES = {"/dev/stdout": 1, "/dev/fd/1": 1, "/proc/self/fd/1": 1}
_STREAM_NAMES |= {"/dev/stderr": 2, "/dev/fd/2": 2, "/proc/self/fd/2": 2}


def stream_descriptor(path: str | os.PathLike[str]) -> int | None:
    """1 or 2 where ``path`` names this process's standard output or error (``/dev/stdout``); else None."""
    return _STREAM_NAMES.get(os.path.abspath(path))


def is_special_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is written into rather than replaced: a device, pipe or socket (after links), or
    a name under /dev or /proc (/dev/stdout may link to a redirected file that is appended to)."""
    if os.path.abspath(path).startswith(("/dev/", "/proc/")):
        return True
    with contextlib.suppress(OSError):
        mode = os.stat(path).st_mode  # of what a link points to
        return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error delete it.
    A link is written through (and kept), a stream or device (:func:`is_special_path`) written into."""
    target = Path(path)
    if (descriptor := stream_descriptor(target)) is not None:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder) / target.name
            yield tmp
            sys.stdout.flush()
            sys.stderr.flush()
            with open(tmp, "rb") as source, open(descriptor, "wb", closefd=False) as stream:
                shutil.copyfileobj(source, stream)
        return
    if is_special_path(target):
        yield target
        return
    if target.is_symlink():
        target = Path(os.path.realpath(target, strict=False))
        if target.is_symlink():  # realpath stops at a loop of links
            raise OSError(errno.ELOOP, f"{path}: a loop of symbolic links")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp, umask = Path(tmp), os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it a normal file's mode
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(obj: Any) -> str:
    """``obj`` as indented, valid JSON: non-finite floats become null."""
    # json writes them as NaN, Infinity and -Infinity, which parse_constant reads back as None
    return json.dumps(json.loads(json.dumps(obj), parse_constant=lambda _: None), indent=2)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (non-finite floats become null)."""
    write_text(path, json_text(obj) + "\n")
