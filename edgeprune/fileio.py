"""Every file edgeprune writes: whole or not at all, and a full, read-only or over-quota disk said in one line.

A write goes to a temporary name in the destination's folder (`.<name>.<random>.tmp`), is fsynced, and is renamed
to its final name only once complete; on any failure the temporary is removed, so a half-written file never sits
under a name a reader trusts. Writers that pick their own file names (ONNX with external data, OpenVINO's .xml +
.bin) write into a staging folder whose files are moved in when all are complete. ENOSPC, EDQUOT and EROFS (and
EACCES/EPERM on the file being written) become a DiskError naming the path, the room the step needs where it is
known, the room left, and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from edgeprune.errors import DiskError, EdgepruneError

# errors that only a write raises: translated wherever they come from (main() catches them from third-party code)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_DENIED = frozenset({errno.EACCES, errno.EPERM})  # translated only for the file being written
OUT = "--out"  # the flag that moves a command's results elsewhere; the default `elsewhere` of every helper


def write_bytes(path: str | Path, data: bytes, *, elsewhere: str = OUT) -> Path:
    """Write `data` to `path` atomically. `elsewhere`: the flag (or variable) that puts this file on another disk."""
    with writing(path, needs=len(data), elsewhere=elsewhere) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, *, elsewhere: str = OUT) -> Path:
    return write_bytes(path, text.encode(), elsewhere=elsewhere)


def copy_file(source: str | Path, path: str | Path, *, elsewhere: str = OUT) -> Path:
    """Copy `source` to `path` atomically (contents and modification time)."""
    with writing(path, needs=os.path.getsize(source), elsewhere=elsewhere) as tmp:
        shutil.copy2(source, tmp)
    return Path(path)


@contextlib.contextmanager
def writing(path: str | Path, *, needs: int | None = None, elsewhere: str = OUT) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name (torch.save, safetensors, onnx.save):
    renamed to `path` when the block ends without an error, removed when it raises. `needs`: the bytes the write
    takes, where known (said in the error)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    with _guarded(tmp, path, path, needs, elsewhere):
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)


@contextlib.contextmanager
def staged(folder: str | Path, *, last: str | None = None, needs: int | None = None,
           elsewhere: str = OUT) -> Iterator[Path]:  # fmt: skip
    """A temporary folder inside `folder` for writers that write several files or name them themselves: its files
    are moved into `folder` when the block ends without an error (`last`, the file a reader opens first, moved
    after the ones it refers to); the folder is removed either way."""
    folder = Path(folder)
    staging = folder / f".staging.{secrets.token_hex(4)}.tmp"
    with _guarded(staging, folder, folder / (last or ""), needs, elsewhere):
        staging.mkdir(parents=True)
        yield staging
        names = sorted((p.name for p in staging.iterdir()), key=lambda name: name == last)
        for name in names:
            _fsync(staging / name)
        for name in names:
            os.replace(staging / name, folder / name)
        staging.rmdir()
        _fsync(folder)


@contextlib.contextmanager
def staged_folder(path: str | Path, *, elsewhere: str = OUT) -> Iterator[Path]:
    """A temporary folder beside `path` that becomes `path` (which must not exist yet) when the block ends without
    an error, and is removed when it raises."""
    path = Path(path)
    staging = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    with _guarded(staging, path, path, None, elsewhere):
        staging.mkdir(parents=True)
        yield staging
        os.replace(staging, path)
        _fsync(path.parent)


def check_room(folder: str | Path, needs: int, *, elsewhere: str = OUT) -> None:
    """Refuse a step whose output cannot fit before it starts: some writers (LLVM's, in the TFLite converter)
    abort the process on a full disk instead of raising."""
    folder = Path(folder)
    if _free(folder) < needs:
        raise _error(errno.ENOSPC, folder, needs, elsewhere)


def append_line(path: str | Path, line: str, *, elsewhere: str = OUT) -> None:
    """Append one line to `path` and fsync it. The line starts on a fresh line even when the file does not end in
    one (a line torn by a crash or a full disk must not swallow this one); a write that fails is cut back off."""
    path = Path(path)
    data = line.encode() + b"\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            _append(fd, size, data)
        finally:
            os.close(fd)
    except OSError as exc:
        error = _translated(exc, path, path, path, len(data), elsewhere, nearly_full=False)
        if error is not None:
            raise error from exc
        raise


def _append(fd: int, size: int, data: bytes) -> None:
    written = 0
    try:
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except BaseException:
        if os.fstat(fd).st_size == size + written:  # no other process appended meanwhile: cut our partial line off
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
        raise


def disk_error(exc: BaseException) -> DiskError | None:
    """The DiskError for a full, read-only or over-quota disk that caused `exc` (None if none did), for errors
    that third-party code raised outside these helpers."""
    found = _disk_errno(exc, lambda filename: False)
    if found is None:
        return None
    code, filename = found
    return _error(code, Path(filename) if filename else None, None, OUT)


@contextlib.contextmanager
def _guarded(temporary: Path, final: Path, named: Path, needs: int | None, elsewhere: str) -> Iterator[None]:
    """On any error in the block: remove `temporary` (a file or folder that becomes `final`), and raise a
    DiskError naming the final path when a disk caused it."""
    try:
        yield
    except BaseException as exc:
        nearly_full = _free(named.parent) < NEARLY_FULL  # before the partial output goes
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                temporary.unlink()
        error = _translated(exc, temporary, final, named, needs, elsewhere, nearly_full=nearly_full)
        if error is not None:
            raise error from exc
        raise


NEARLY_FULL = 1 << 20  # bytes free at a failure that say "the disk filled up" when the writer's error does not


def _translated(exc: BaseException, temporary: Path, final: Path, named: Path, needs: int | None, elsewhere: str,
                *, nearly_full: bool) -> DiskError | None:  # fmt: skip
    """The DiskError for `exc`, naming the final path rather than the temporary one; None when no disk caused it.
    Third-party writers often drop the errno (torch.save: "file write failed", OpenVINO: "iostream error"), so a
    failure that left the disk nearly full counts as a full disk too."""
    if isinstance(exc, DiskError):
        return None
    found = _disk_errno(exc, lambda filename: _inside(Path(filename), (temporary, final)))
    if found is None and nearly_full and isinstance(exc, Exception) and not isinstance(exc, EdgepruneError):
        found = (errno.ENOSPC, None)
    if found is None:
        return None
    code, filename = found
    return _error(code, _final_name(Path(filename), temporary, final) if filename else named, needs, elsewhere)


_STRERRORS = {os.strerror(code): code for code in DISK_ERRNOS}


def _disk_errno(exc: BaseException, denied_counts) -> tuple[int, str | None] | None:
    """(errno, file name) of the first disk error in `exc`'s chain of causes: an OSError with a disk errno, or a
    permission error on a file `denied_counts` accepts, or a message that quotes a disk errno's text."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc.errno, exc.filename
        if isinstance(exc, OSError) and exc.errno in _DENIED and exc.filename and denied_counts(exc.filename):
            return exc.errno, exc.filename
        quoted = next((code for text, code in _STRERRORS.items() if text in str(exc)), None)
        if quoted is not None and not isinstance(exc, EdgepruneError):  # not a device's own disk, said by its agent
            return quoted, None
        exc = exc.__cause__ or exc.__context__
    return None


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _final_name(path: Path, temporary: Path, final: Path) -> Path:
    if path == temporary:
        return final
    if temporary in path.parents:
        return final / path.relative_to(temporary)
    return path


def _error(code: int, path: Path | None, needs: int | None, elsewhere: str) -> DiskError:
    """The one line for a disk error; `path` None when the writer did not say which file it was writing."""
    target = f"writing {path}" if path else "writing a file"
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the disk" if code == errno.ENOSPC else "the disk quota is used up"
        room = [f"needs about {_size(needs)}"] if needs else []
        room += [f"{_size(_free(path))} free there"] if path else []
        return DiskError(
            f"{what} {target}" + (f" ({', '.join(room)})" if room else ""),
            fix=f"free space there, or point {elsewhere} at a disk with room",
        )
    if code == errno.EROFS:
        return DiskError(
            f"cannot write {path or 'a file'}: its filesystem is read-only",
            fix=f"point {elsewhere} at a writable filesystem",
        )
    return DiskError(
        f"no permission {target}",
        fix=f"make {path.parent if path else 'the folder'} writable for this "
        f"user, or point {elsewhere} at a folder you can write",
    )


def _free(path: Path) -> int:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            stats = os.statvfs(folder)
            return stats.f_bavail * stats.f_frsize
    return 0


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk, so a rename never publishes unwritten blocks."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
