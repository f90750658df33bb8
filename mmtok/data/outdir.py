"""Writing into the output folder: the up-front writability check, atomic writes, one file mode, and
the clean-up of temporary files a killed process left behind.

Every file of an output folder is written under a temporary name `<final>.tmp-<pid>` and renamed into
place, so a reader never sees half a file. Files get the mode a plain `open()` gives (0666 less the
umask, 0644 usually) and folders 0777 less the umask, whoever wrote them (safetensors writes 0600).
A failure to write (read-only file system, permission, disk full) is an `OutputError` naming the path:
the CLI reports it as a usage error (exit 2) instead of a traceback.
"""
from __future__ import annotations

import contextlib
import os
import pathlib

TEMP_MARK = ".tmp-"
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
        probe = out_dir / f"{WRITE_TEST}{TEMP_MARK}{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()


def temporary(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}")


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


def stale_temporaries(folder: pathlib.Path, pattern: str = "*") -> list[pathlib.Path]:
    """Temporary files / folders (`name.tmp-PID`) in `folder` whose process is gone: a killed write."""
    stale = []
    for path in sorted(folder.glob(f"{pattern}{TEMP_MARK}*")):
        pid = path.name.rsplit(TEMP_MARK, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            stale.append(path)
    return stale


def remove(path: pathlib.Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
