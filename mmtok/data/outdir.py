"""Writing into the output folder: the up-front writability check, atomic writes, one file mode, and
the clean-up of temporary files a killed process left behind.

Every file of an output folder is written under a temporary name `<final>.tmp-<host>-<pid>` and renamed
into place, so a reader never sees half a file. A later run removes the temporary files of a killed
process: on the same host when that process is gone, from another host (ranks on several machines
sharing the folder) once the file is older than `FOREIGN_TEMP_SECONDS`. Files get the mode a plain `open()` gives (0666 less the
umask, 0644 usually) and folders 0777 less the umask, whoever wrote them (safetensors writes 0600).
A failure to write (read-only file system, permission, disk full) is an `OutputError` naming the path:
the CLI reports it as a usage error (exit 2) instead of a traceback.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import socket
import time

TEMP_MARK = ".tmp-"
FOREIGN_TEMP_SECONDS = 3600.0
HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
WRITE_TEST = ".write-test"


class OutputError(OSError):
    """The output folder cannot be written (the message names the path and the reason)."""


@contextlib.contextmanager
def writing(what):
    """Turn an OSError raised while writing into the output folder into an OutputError naming `what`."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        where = exc.filename if exc.filename is not None else what
        raise OutputError(f"cannot write {where}: {exc.strerror or exc}") from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~_umask()


def folder_mode() -> int:
    return 0o777 & ~_umask()


def normalise_modes(root: pathlib.Path) -> None:
    """Give every file under `root` the file mode and every folder the folder mode (see the module doc)."""
    files, folders = file_mode(), folder_mode()
    os.chmod(root, folders)
    for folder, dirs, names in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(folder, d), folders)
        for n in names:
            os.chmod(os.path.join(folder, n), files)


def prepare(out_dir: pathlib.Path) -> None:
    """Create the output folder and prove it is writable before any work starts."""
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f"{WRITE_TEST}{temp_suffix()}"
        with open(probe, "wb") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()


def temp_suffix() -> str:
    """`.tmp-<host>-<pid>`: which process writes the file, so a later run can tell a killed write."""
    return f"{TEMP_MARK}{HOST}-{os.getpid()}"


def temporary(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f"{path.name}{temp_suffix()}")


def commit(temporary_path: pathlib.Path, final: pathlib.Path) -> None:
    """fsync a finished temporary file and rename it into place."""
    with open(temporary_path, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary_path, final)


def write_atomic(path: pathlib.Path, data: bytes | str) -> None:
    """Write `path` through a temporary file; the temporary file does not outlive a failed write."""
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != 0


def _stale(path: pathlib.Path) -> bool:
    owner = path.name.rsplit(TEMP_MARK, 1)[1]
    host, _, pid = owner.rpartition("-")
    if not pid.isdigit():
        return False
    if host in ("", HOST):  # this machine ("" : a name without the host part)
        return int(pid) != os.getpid() and not _alive(int(pid))
    try:
        return time.time() - path.lstat().st_mtime > FOREIGN_TEMP_SECONDS
    except OSError:
        return False


def stale_temporaries(folder: pathlib.Path, pattern: str = "*") -> list[pathlib.Path]:
    """Temporary files / folders (`name.tmp-<host>-<pid>`) in `folder` that a killed write left behind."""
    return [path for path in sorted(folder.glob(f"{pattern}{TEMP_MARK}*")) if _stale(path)]


def remove(path: pathlib.Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
