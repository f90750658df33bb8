"""One check for "a file we are about to read", with a message that says what is really wrong.

`os.path.isfile` is False for a missing file, a symlink loop, an unreadable parent folder, /dev/zero and a
FIFO alike, so a plain "not found" misleads; and opening a FIFO blocks forever. `regular_file` stats the path
once and names the actual problem (missing, broken link, link loop, permission denied, directory, device /
FIFO / socket) before anything opens it. Every media and weight reader goes through it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import stat

_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def _article(what: str) -> str:
    return f"a{'n' if what[:1].lower() in 'aeiou' else ''} {what}"


def regular_file(path, what: str = "file") -> pathlib.Path:
    """`path` as a Path when it is a readable regular file (symlinks followed). Otherwise FileNotFoundError
    (missing, or a broken symlink), IsADirectoryError, PermissionError, or ValueError (symlink loop, device,
    FIFO, socket), each naming the path and `what` was expected there."""
    path = pathlib.Path(os.fspath(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(f"{what} not found: {path} is a broken symbolic link (to "
                                    f"{os.readlink(path)!r})") from None
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except PermissionError as exc:
        raise PermissionError(f"{path}: permission denied, cannot reach the {what} ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{path}: symbolic link loop, cannot resolve the {what}") from None
        raise ValueError(f"{path}: cannot access the {what} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"expected {_article(what)}, got a directory: {path}")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        raise ValueError(f"{path}: is {kind}, not a regular file; expected {_article(what)}")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: permission denied, cannot read the {what}")
    return path


def open_failure(path, what: str) -> str | None:
    """Why a reader could not open `path`, in the OS's words ("[Errno 13] Permission denied"), when a plain
    open fails; None when it opens (so the reader's own message is the better one). For libraries such as
    libsndfile that report an unreadable file only as "System error."."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return f"{what} {path}: {exc.strerror or exc}"
    return None


@contextlib.contextmanager
def errors_naming(origin, what: str):
    """Inside: a KeyError / TypeError / AttributeError / IndexError (a file whose content has the wrong shape:
    a list where an object belongs, a missing key) becomes a ValueError naming `origin` and `what` it should
    have been, and a plain ValueError that does not name `origin` gets it as a prefix; so every loader fails
    with one exception type that says which file is at fault."""
    origin = str(origin)
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{origin}: not a valid {what} ({type(exc).__name__}: {exc})") from exc
    except ValueError as exc:
        if type(exc) is ValueError and origin not in str(exc):
            raise ValueError(f"{origin}: {exc}") from exc
        raise
