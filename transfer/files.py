"""Writing files so that nothing is lost: every file is published whole (temporary file, fsync, rename), and
a full disk or a read-only folder is one line that names the path.

This is the ground floor: any module may import it, it imports nothing of the project but the errors.

A fault hook for the tests and tools/torture.py: with TRANSFER_TEST_FAULT=NAME:N:ACTION in the environment,
the Nth publish of a file (or folder) called NAME in this process, or the Nth `fault_point(NAME)`, does ACTION:
`before` / `after` SIGKILL this process before / after the rename, `torn` stops an append half-way and
SIGKILLs, `enospc` / `erofs` raise the OSError of a full disk / a read-only file system, `sigterm` sends this
process SIGTERM (a preemption) and carries on. Without the variable nothing happens.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import TransferError

TEMP_SUFFIX = ".tmp"
_FAULT_ENV = "TRANSFER_TEST_FAULT"
_fault_counts: dict = {}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; a published file gets the mode a plain open() would give it.
_FILE_MODE = 0o666 & ~_umask()


class OutputError(TransferError):
    """A file cannot be written: no space, a read-only file system, no permission."""


def output_error(path: Path, e: OSError, needed: int | None = None) -> OutputError:
    """One line for an OSError met while writing `path`."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        size = f" ({needed / 2**20:.1f} MiB needed)" if needed else ""
        return OutputError(f"no space left on the device writing {path}{size}; free some space or choose another "
                           f"--out; the previous version of the file, if any, is intact")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write {path}: {e.strerror.lower() if e.strerror else e}; choose another --out "
                           f"on a writable file system")
    return OutputError(f"cannot write {path}: {e.strerror or e}")


_ACTIONS = {"before": "before", "after": "after", "torn": "torn", "enospc": "before", "erofs": "before",
            "sigterm": "before"}  # action -> the moment it happens at


def reset_faults() -> None:
    """Count publishes anew (each command counts its own; the tests run several in one process)."""
    _fault_counts.clear()


def fault_point(name: str, moment: str = "before") -> None:
    """Where TRANSFER_TEST_FAULT acts (see the module docstring)."""
    spec = os.environ.get(_FAULT_ENV)
    if not spec:
        return
    target, nth, action = spec.rsplit(":", 2)
    if target != name or _ACTIONS.get(action) != moment:
        return
    if _fault_counts.get("spec") != spec:  # a new fault (tests run several in one process): count anew
        _fault_counts.clear()
        _fault_counts["spec"] = spec
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] != int(nth):
        return
    if action in ("enospc", "erofs"):
        code = errno.ENOSPC if action == "enospc" else errno.EROFS
        raise OSError(code, os.strerror(code))
    os.kill(os.getpid(), signal.SIGTERM if action == "sigterm" else signal.SIGKILL)


def check_output_file(path: Path, ours, what: str) -> Path:
    """Refuse to write over a file this command did not make: `ours(path)` tells one of its own outputs."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for the {what}")
    if path.exists() and not ours(path):
        raise OutputError(f"{path} exists and is not a {what}; it is left alone: choose another output path")
    return path


def check_output_dir(path: Path, names: set[str], what: str) -> Path:
    """Refuse a folder that holds anything but this command's own outputs (`names`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file; give a folder for the {what}")
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir()
                        if p.name not in names and not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)))
        if others:
            raise OutputError(f"{path} holds files that are not a {what} ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}); choose another --out")
    return path


def make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from None
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    make_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        fault_point(path.name, "before")
        os.replace(tmp, path)
        tmp = None
        fault_point(path.name, "after")
    except OSError as e:
        raise output_error(path, e, len(data)) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_csv(path: Path, header: list[str], rows: Iterable[Iterable]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display is needed or opened), imported on first use
    so that commands that draw nothing do not pay for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def atomic_savefig(fig, path: Path, **kwargs) -> Path:
    """A matplotlib figure as PNG, published whole."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def append_line(path: Path, line: str) -> None:
    """Append one line (a log record). A torn last line is possible only here, and readers drop it."""
    data = (line + "\n").encode()
    try:
        with open(path, "ab") as f:
            half = len(data) // 2 if os.environ.get(_FAULT_ENV, "").endswith(":torn") else 0
            if half:
                f.write(data[:half])
                f.flush()
                fault_point(path.name, "torn")
            f.write(data[half:])
    except OSError as e:
        raise output_error(path, e, len(data)) from None


@contextlib.contextmanager
def building_dir(final: Path):
    """Build a folder whole: yields an empty staging folder beside `final`, which replaces `final` when the
    block ends without an exception (two renames: the old folder is moved aside first)."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}{TEMP_SUFFIX}")
    old = final.with_name(f".{final.name}.old{TEMP_SUFFIX}")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    make_dir(tmp)
    try:
        yield tmp
        if final.exists():
            os.replace(final, old)
        fault_point(final.name, "before")
        os.replace(tmp, final)
        fault_point(final.name, "after")
    except OSError as e:
        raise output_error(final, e) from None
    finally:  # after a failure: the previous folder back in place, no staging left
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what interrupted writes left under `folder` (.NAME.*.tmp files and folders); returns them."""
    found = sorted(p for p in folder.rglob(f".*{TEMP_SUFFIX}") if p.name.startswith("."))
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found
