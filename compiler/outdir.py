"""Output directories and files: vlc writes only where it may, and never loses a user's data.

Every directory vlc writes carries a marker file (`.vlc-output`, JSON naming its kind), or is
recognisably vlc's from its contents (an artifact's manifest.json, a results tree of
*.result.json records, ...). A non-empty directory that vlc did not write is refused with one
line; an empty or missing one is fine. Temporary directories carry their owner's pid in their
name, so orphans of killed runs are removed on the next run into the same place while a
concurrent run's are left alone. A lock file beside an output serialises two writers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import vlc
from vlc.errors import InputError

MARKER = ".vlc-output"

# kind -> how a message names it
KINDS = {
    "artifact": "a vlc artifact",
    "bundle": "a vlc Ascend bundle",
    "bundles": "a vlc bundle folder (vlc bench --emit)",
    "bench-artifacts": "a vlc bench artifact folder (vlc bench --artifacts)",
    "results": "a vlc results folder (vlc bench --results)",
    "run-outputs": "a vlc outputs folder (vlc run -o)",
    "inputs": "a vlc inputs folder (vlc run/profile --save-inputs)",
}

# what the scripts of a deploy bundle write on the target machine: never replaced silently
BUNDLE_REMOTE = ("results", "om", "logs")

_PID = re.compile(r"-(\d+)-")  # temp names: .NAME.<what>-<pid>-<random>


# ---- modes -------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def dir_mode() -> int:
    """The mode a plain `mkdir` would give: what the user's umask allows."""
    return 0o777 & ~current_umask()


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A temporary directory in `parent` whose name carries this process's pid (see clean_orphans),
    with the user's umask mode instead of mkdtemp's 0700 (it becomes the output)."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    path.chmod(dir_mode())
    return path


# ---- markers and recognition -------------------------------------------------------------------
def write_marker(directory: Path, kind: str) -> None:
    try:
        (Path(directory) / MARKER).write_text(json.dumps({"kind": kind, "vlc_version": vlc.__version__}) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write in {directory}: {exc.strerror or exc}",
                         fix="choose a writable location") from None


def read_marker(directory: Path) -> str | None:
    try:
        data = json.loads((Path(directory) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def _json_dict(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_manifest(path: Path) -> bool:
    data = _json_dict(path)
    return data is not None and isinstance(data.get("schema"), int) and isinstance(data.get("target"), str)


# vlc's own temporaries and locks inside an output: .NAME.lock, .NAME.building-..., mkstemp's .NAME.xxxxxxxx
_TEMP = re.compile(r"\..+\.(?:lock|users|(?:building|old|emitting|writing)-.+|[a-z0-9_]{8})")


def _is_temp(name: str) -> bool:
    return bool(_TEMP.fullmatch(name))


def _entries(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name != MARKER)


def _only_files(directory: Path, keep: Callable[[Path], bool], depth: int = 3) -> bool:
    """Whether everything below `directory` (up to `depth` levels) is a file that `keep` accepts
    or vlc's own temporary file."""
    for entry in _entries(directory):
        if _is_temp(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if depth == 0 or not _only_files(entry, keep, depth - 1):
                return False
        elif not (entry.is_file() and keep(entry)):
            return False
    return True


def _children_are(directory: Path, kind: str, depth: int) -> bool:
    entries = [e for e in _entries(directory) if not _is_temp(e.name)]
    for entry in entries:
        if not entry.is_dir() or entry.is_symlink():
            return False
        if detect_kind(entry) != kind and not (depth > 1 and _children_are(entry, kind, depth - 1)):
            return False
    return True


def detect_kind(directory: Path) -> str | None:
    """Which kind of vlc output `directory` is (its marker, else its contents), or None."""
    directory = Path(directory)
    if kind := read_marker(directory):
        return kind
    if (directory / "bundle.json").is_file() and _is_manifest(directory / "manifest.json"):
        return "bundle"
    if _is_manifest(directory / "manifest.json"):
        return "artifact"
    if not _entries(directory):
        return None
    if _only_files(directory, lambda p: p.name.endswith(".result.json")) or any(directory.glob("*/*/*.result.json")):
        return "results"  # bench only adds and replaces records: a tree that holds some is safe to add to
    if (directory / "outputs.npz").is_file() and \
            _only_files(directory, lambda p: p.suffix == ".npy" or p.name == "outputs.npz", depth=0):
        return "run-outputs"  # not just any folder of .npy files: that may be someone's inputs
    # model folders of artifact (or bundle) folders, as vlc bench lays them out
    if _children_are(directory, "artifact", 2):
        return "bench-artifacts"
    if _children_are(directory, "bundle", 2):
        return "bundles"
    return None


# ---- claiming ----------------------------------------------------------------------------------
def _names(entries: list[Path], limit: int = 3) -> str:
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    return ", ".join(names) + (", ..." if len(entries) > limit else "")


def _check_parents(path: Path, option: str) -> None:
    """The first existing ancestor of `path` must be a directory."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise InputError(f"{parent} is a file, so {path} cannot be created in it",
                                 fix=f"choose another {option}")
            return


def _check_not_cwd(real: Path, path: Path, option: str) -> None:
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise InputError(f"{option} {path} is the current directory (or holds it)",
                         fix=f"give {option} a new directory, e.g. {option} out")


def _refuse_bundle_results(real: Path, path: Path, option: str) -> None:
    remote = [real / n for n in BUNDLE_REMOTE if (real / n).is_dir() and any((real / n).iterdir())]
    if remote:
        raise InputError(f"{path} is a deploy bundle that holds {_names(remote)} from the target machine",
                         fix=f"import them (`vlc ascend import {path}`) and move the bundle away, "
                             f"or choose another {option}")


def claim_output_dir(path: str | Path, kind: str, *, option: str = "-o", create: bool = False) -> Path:
    """Check that vlc may write `path` as a `kind` directory; return the real directory to write
    (a symlink is followed, so the link stays a link). With `create`, make it and mark it.

    Refused with one line: a file, a non-empty directory vlc did not write or of another kind,
    the current directory, a path below a file."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    path = Path(path)
    _check_parents(path, option)
    real = Path(os.path.realpath(path))
    _check_not_cwd(real, path, option)
    if real.exists() and not real.is_dir():
        raise InputError(f"{option} {path} exists and is not a directory",
                         fix=f"choose another {option}, or delete the file yourself")
    if real.is_dir():
        try:
            entries = _entries(real)
            found = detect_kind(real) if entries else kind
        except OSError as exc:
            raise InputError(f"cannot read {option} {path}: {exc.strerror or exc}",
                             fix=f"check its permissions, or choose another {option}") from None
        if found != kind:
            what = (f"is {KINDS[found]}, not {KINDS[kind]}" if found in KINDS else
                    f"is not {KINDS[kind]}: it holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} "
                    f"vlc did not write ({_names(entries)})")
            raise InputError(f"{option} {path} {what}",
                             fix=f"choose another {option}, or empty or delete it yourself")
        if kind == "bundle":
            _refuse_bundle_results(real, path, option)
    if create:
        make_dir(real)
        if read_marker(real) != kind:
            write_marker(real, kind)
    return real


def make_dir(path: Path) -> None:
    """mkdir -p with the user's umask, as one line on failure."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create directory {path}: {exc.strerror or exc}",
                         fix="choose a writable location") from None


def check_output_file(path: str | Path, *, option: str = "-o") -> Path:
    """Check that vlc may write the file `path`: not a directory, not below a file; its parent
    is created when missing. Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory", fix=f"give {option} a file name inside it, "
                         f"e.g. {option} {path / 'out'}{path.suffix}")
    _check_parents(path, option)
    make_dir(path.parent)
    return path


# ---- orphans -----------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _owner(name: str) -> int | None:
    match = _PID.search(name + "-")
    return int(match.group(1)) if match else None


_held: dict[str, int] = {}  # lock files of name families this process uses (see clean_orphans)


def _sole_user(parent: Path, name: str) -> bool:
    """Whether no other live process uses `.NAME.*` temporaries in `parent`: each user holds a
    shared lock on `.NAME.users` for its lifetime (released by the kernel when it dies)."""
    lock = parent / f".{name}.users"
    key = str(lock)
    fd = _held.get(key)
    if fd is None:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return False
        _held[key] = fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        sole = True
    except OSError:
        sole = False
    fcntl.flock(fd, fcntl.LOCK_SH)
    return sole


# the temporaries vlc makes beside an output: .NAME.<family>-<pid>-<random> (and older forms)
FAMILIES = ("building", "old", "emitting", "writing")


def _orphan_pattern(name: str, mkdtemp_names: bool) -> re.Pattern[str]:
    families = "|".join(FAMILIES)
    forms = [rf"(?:{families})(?:-.+)?"]
    if mkdtemp_names:  # tempfile.mkdtemp(prefix=".NAME."): eight random characters
        forms.append(r"[a-z0-9_]{8}")
    return re.compile(rf"\.{re.escape(name)}\.(?:{'|'.join(forms)})")


def clean_orphans(parent: str | Path, name: str, *, locked: bool = False,
                  mkdtemp_names: bool = True) -> list[Path]:
    """Remove leftovers of killed runs into `parent/name`: directories `.NAME.building-*` (and the
    other FAMILIES) and, with `mkdtemp_names`, mkdtemp's `.NAME.xxxxxxxx`, whose owner is gone.
    The owner is the pid in the name (make_temp_dir). One without a pid is removed only when no
    other live process works on NAME: `locked` says the caller holds output_lock(parent/NAME),
    else a shared lock on `.NAME.users`, held for this process's lifetime, tells.
    Files are left alone. Returns what was removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    pattern = _orphan_pattern(name, mkdtemp_names)
    prefix = f".{name}."
    candidates = [p for p in parent.iterdir()
                  if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    if locked and not candidates:
        return []
    sole = True if locked else _sole_user(parent, name)  # registers this process as a user too
    removed = []
    for entry in candidates:
        owner = _owner(entry.name[len(prefix):])
        stale = (owner != os.getpid() and not pid_alive(owner)) if owner is not None else sole
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# ---- a lock per output -------------------------------------------------------------------------
def _tell(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def output_lock(path: Path, *, on_wait: Callable[[str], None] | None = _tell,
                timeout: float | None = None) -> Iterator[None]:
    """Hold `.NAME.lock` beside `path` exclusively: a second writer waits (saying so through
    `on_wait`, stderr by default), or fails with one line after `timeout` seconds. The lock file
    is removed on release."""
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    fd = _acquire(lock, path, on_wait, timeout)
    try:
        yield
    finally:
        with suppress(OSError):
            lock.unlink()  # while still held: a waiter then sees a new inode and retries
        os.close(fd)


def _acquire(lock: Path, path: Path, on_wait: Callable[[str], None] | None, timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if deadline is not None and time.monotonic() > deadline:
                raise InputError(f"another vlc process (pid {holder}) is writing {path}",
                                 fix="wait for it to finish, or choose another output") from None
            if not told and on_wait is not None:
                on_wait(f"waiting for vlc process {holder}, which is writing {path}")
                told = True
            time.sleep(0.2)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder unlinked on release
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)


# ---- replacing a directory ---------------------------------------------------------------------
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, dest: Path) -> None:
    """Put directory `new` at `dest` (a real path, not a symlink); an existing `dest` is swapped
    out atomically and deleted. Where the swap is unsupported, `dest` is renamed aside first."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.replace(new, dest)
        return
    if _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)  # now holds the previous contents
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
    os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)
