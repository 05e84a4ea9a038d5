"""Writing output files so that a failure never leaves a half-written one."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from paramcalc.errors import SpecError

__all__ = ["write_atomically", "write_text_atomically"]


def _file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the old file's, else 0o666 minus umask
    (``mkstemp`` creates its temporary as 0o600)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomically(path: Path, write: Callable[[str], None], *, option: str = "-o") -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    ``option`` names the command-line option in the error when the folder cannot be written. A
    symlink is written through (its target is replaced, the link kept); a directory or a special
    file (a FIFO, a device) is refused.
    """
    path = _target(Path(path), option)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    except OSError as exc:
        message = f"{option}: cannot write {path}: {exc.strerror or exc}"
        raise SpecError(message, source="command line") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _target(path: Path, option: str) -> Path:
    """The regular file to replace for ``path`` (a symlink's target), or a :class:`SpecError`."""
    if path.is_symlink():
        path = path.resolve()
    if path.is_dir():
        raise SpecError(f"{option}: {path} is a directory; expected a file name", source="command line")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise SpecError(f"{option}: {path} is not a regular file (a FIFO or a device?); expected a file "
                        "name", source="command line")
    return path


def write_text_atomically(path: Path, text: str, *, option: str = "-o") -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`write_atomically`."""
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), option=option)
