"""Output folders that are complete or absent, and never destroy what they did not make.

Every stage writes into a temporary sibling folder and puts it in place only when it has
finished, so an error (or a kill) never leaves a half-written output folder behind under the
requested name. The rules around that:

* **Ownership.** Each stage output carries a small marker, ``scratchbert_output.json``, that
  says which stage wrote it. An existing ``--out`` is replaced only when it is empty, when
  its marker names the same stage (a rerun), or with an explicit ``overwrite``; anything
  else (a file, a folder of the user's, another stage's output) is refused in one line.
* **Inputs are never outputs.** An output equal to or inside an input, or one that contains
  an input, is always refused: replacing it would delete the input.
* **Found before the work.** :func:`check_output` runs at the top of a stage, before any
  training, and also tries to create a folder where the output will go, so an unwritable
  place (a read-only folder, a file as parent, ``/proc``) fails in seconds, not at the end.
* **Normal permissions.** The temporary folder is created private (``mkdtemp``: 0700) and
  opened up to what the umask allows (0755 by default) before it becomes the output, so a
  serving container running as another user can read a model.
* **Orphans are cleaned up.** A temporary folder is locked (``flock``) by the process writing
  it; a later write to the same output removes every unlocked ``.OUT.tmp-*`` folder, which a
  killed run left behind.

The swap uses ``renameat2(RENAME_EXCHANGE)`` where the kernel has it (Linux), so the old and
the new folder trade places in one step and the output path never disappears; elsewhere the
old folder is moved aside first and a later write puts it back if a kill came in between.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from scratchbert.errors import ScratchBertError

log = logging.getLogger(__name__)

MARKER = "scratchbert_output.json"


# --------------------------------------------------------------------------------------------
# Checks made before any work starts
# --------------------------------------------------------------------------------------------


def is_remote(uri) -> bool:
    """Whether an input is an ``s3://`` or ``hf://`` address rather than a local path."""
    return str(uri).startswith(("s3://", "hf://"))


def local_folder(path, what: str) -> Path:
    """``path`` as a local folder, or one line where it is an address (``s3://...``): the stages
    read their datasets, tokenizers and pretrained models and write every output on this
    machine's disk, and ``Path`` would take ``s3://b/x`` for the local folder ``s3:/b/x``."""
    if "://" in str(path):
        raise ScratchBertError(f"{what} {path} is an address, but {what} takes a folder on this machine; give a path "
                               "(a trained model reaches object storage by publishing it, checkpoints by --checkpoint-uri)")
    return Path(path)


def walk_files(folder: str | os.PathLike, skip: Callable[[str], bool] = lambda name: False) -> list[Path]:
    """The files under ``folder``, in linked subfolders too (each real folder once: a link back up
    the tree ends there), sorted by their parts, leaving out the files and folders whose names
    ``skip`` says. ``Path.rglob`` does not follow links to folders."""
    return sorted(Path(root) / n for root, _, names in _walk_linked(folder, skip)
                  for n in names if not skip(n) and (Path(root) / n).is_file())


def _walk_linked(folder: str | os.PathLike, skip: Callable[[str], bool] = lambda name: False):
    """``os.walk`` into linked folders too, each real folder once, leaving out the folders ``skip`` says."""
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or a second link to a folder already read
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not skip(d)]
        yield root, dirs, names


def local_path(path) -> Path | None:
    """A local input path, resolved; None for empty values and s3:// or hf:// addresses."""
    text = str(path or "")
    if not text or is_remote(text):
        return None
    return Path(text).expanduser().resolve()


def stage_of(folder: str | os.PathLike) -> str | None:
    """The stage whose output ``folder`` is (from its marker), or None."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("stage")
    except (OSError, ValueError, AttributeError):
        return None


def read_marker(folder: str | os.PathLike) -> dict:
    """The marker of a stage output (``{}`` when there is none or it cannot be read)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_output(out: str | os.PathLike, *, stage: str | None, inputs: Iterable = (), overwrite: bool = False,
                 what: str = "--out") -> Path:
    """Raise a one-line :class:`ScratchBertError` unless ``out`` may be written by ``stage``; return it resolved.

    ``inputs`` are the stage's inputs (local paths; ``s3://``/``hf://`` and empty values are
    ignored). ``what`` names the option in messages. Cheap (no output is created; one probe
    folder is made and removed where the output will go), so stages call it first. It also
    removes the temporary folders that killed writers of ``out`` left (:func:`clean_orphans`).
    """
    if not str(out or "").strip():
        raise ScratchBertError(f"{what} is empty; give the folder to write")
    out = local_folder(out, what).expanduser().resolve()
    for given in inputs:
        inp = local_path(given)
        relation = inp and relation_to(out, inp)
        if relation:
            raise ScratchBertError(f"{what} {out} {relation} the input {inp}; writing there would destroy the input, so choose another {what}")
        for target in _linked_folders(inp) if inp and inp.is_dir() else ():
            relation = relation_to(out, target)
            if relation:
                raise ScratchBertError(f"{what} {out} {relation} {target}, which a link in the input {inp} leads to (it is read as "
                                       f"part of the input); writing there would destroy the input, so choose another {what}")
    cwd = Path.cwd().resolve()
    if cwd == out or out in cwd.parents:
        raise ScratchBertError(f"{what} {out} contains the current folder {cwd}; replacing it would delete the folder you work in, so choose another {what}")
    if out.exists() and not out.is_dir():
        if not out.is_file():
            raise ScratchBertError(f"{what} {out} exists and is neither a folder nor a file; choose another {what}")
        if not overwrite:
            raise ScratchBertError(f"{what} {out} is an existing file; choose another {what}, or pass --overwrite to replace it")
    elif out.is_dir():
        found = stage_of(out)
        if not overwrite and found != stage and _non_empty(out):
            owner = (f"the output of `scratchbert {found.removesuffix('-logs')}`" + (" (its logs)" if found.endswith("-logs") else "")
                     if found else "not written by scratchbert")
            raise ScratchBertError(f"{what} {out} already exists and is {owner}; choose another {what}, "
                                   f"or pass --overwrite to replace it")
    check_writable(out, what)
    clean_orphans(out)  # what earlier, killed writers left, now rather than after this run's work
    return out


def _linked_folders(folder: Path) -> list[Path]:
    """The real folders that links inside ``folder`` lead to: a corpus reads them as its own
    (:func:`walk_files`), so they are inputs too."""
    return [Path(os.path.realpath(os.path.join(root, d))) for root, dirs, _ in _walk_linked(folder)
            for d in dirs if os.path.islink(os.path.join(root, d))]


def relation_to(path: Path, other: Path) -> str | None:
    """How the resolved folder ``path`` stands to ``other``: "is", "is inside", "contains", or None (apart)."""
    if path == other:
        return "is"
    if other in path.parents:
        return "is inside"
    if path in other.parents:
        return "contains"
    return None


def check_distinct(paths: dict[str, str | os.PathLike]) -> None:
    """Outputs of one stage (``{"--out": ..., "--logs": ...}``) must not be, or hold, one another."""
    resolved = {name: local_folder(p, name).expanduser().resolve() for name, p in paths.items() if str(p or "")}
    names = list(resolved)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa, pb = resolved[a], resolved[b]
            if pa == pb or pa in pb.parents or pb in pa.parents:
                raise ScratchBertError(f"{a} {pa} and {b} {pb} overlap; give each its own folder")


def check_writable(out: Path, what: str = "--out", *, inside: bool = False) -> None:
    """Raise when no folder can be created at ``out``'s place (checked with a real probe folder),
    nor swapped in there (a mount point cannot be renamed: EBUSY); ``inside``: ``out`` is a folder
    to write into (probed inside it when it exists)."""
    out = Path(out)
    if not inside and os.path.ismount(out):
        raise ScratchBertError(f"{what} {out} is a mount point, which cannot be replaced whole; give a folder inside it")
    anchor = out if inside else out.parent
    while not anchor.exists() and not anchor.is_symlink():
        anchor = anchor.parent
    if not anchor.is_dir():
        raise ScratchBertError(f"cannot create {what} {out}: {anchor} is a file, not a folder; choose another {what}")
    try:
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=anchor)
    except OSError as e:
        raise ScratchBertError(f"cannot write {what} {out}: no folder can be created in {anchor} ({e.strerror or e}); "
                               "choose a folder you can write to") from None
    with contextlib.suppress(OSError):
        os.rmdir(probe)


def _non_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(True for _ in entries)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _umask() -> int:
    try:  # Linux 4.7+: read it without changing it (os.umask is process-wide, not thread-safe)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_permissions(folder: Path) -> None:
    """mkdtemp makes a 0700 folder; give it the mode a plain mkdir would have (0755 under umask 022)."""
    os.chmod(folder, 0o777 & ~_umask())


def _readable_and_synced(folder: Path) -> None:
    """Let whoever the umask lets read ``folder``'s files and folders read them (some writers make
    their files private: safetensors saves weights 0600, and a serving container of another user
    must read the model), and put them on the disk (fsync) before the folder replaces the output:
    a rename is atomic for other processes, not for a machine that loses power, which can come
    back with the new folder's names over files whose data never reached the disk. One walk."""
    readable = 0o444 & ~_umask()
    for root, dirs, files in os.walk(folder):
        for name, bits in [(d, readable | readable >> 2) for d in dirs] + [(f, readable) for f in files]:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            if mode & bits != bits:
                os.chmod(path, stat.S_IMODE(mode) | bits)
            if stat.S_ISREG(mode):
                _fsync(path, os.O_RDONLY)
        _fsync(root, os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: str | os.PathLike, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(folder: Path) -> int:
    """Hold an exclusive lock on ``folder`` (its fd) for as long as this process writes it."""
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def clean_orphans(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders of ``out`` that earlier, killed writers left behind; return them.

    A ``.OUT.tmp-*`` folder whose lock can be taken has no live writer. A ``.OUT.old-*``
    folder (the old output moved aside where no atomic exchange exists) is put back when
    ``out`` is missing (a kill between the two renames), else removed.
    """
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    name = glob.escape(out.name)
    for tmp in sorted(out.parent.glob(f".{name}.tmp-*")):
        if not tmp.is_dir() or tmp.is_symlink():
            continue
        try:
            fd = _lock(tmp)
        except BlockingIOError:
            continue  # a live writer holds it
        except OSError:
            continue
        try:
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            os.close(fd)
        if not tmp.exists():
            removed.append(tmp)
            log.warning("removed %s, left by an earlier run that was killed while writing %s", tmp, out)
    for probe in out.parent.glob(f".{name}.probe-*"):  # check_writable's, if killed in between
        with contextlib.suppress(OSError):
            probe.rmdir()
    for old in sorted(out.parent.glob(f".{name}.old-*")):
        pid = old.name.rsplit(".old-", 1)[-1].split("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
        else:
            os.replace(old, out)
            log.warning("restored %s from %s, left by a run killed while replacing it", out, old)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def write_marker(folder: str | os.PathLike, stage: str, extra: dict | None = None) -> None:
    """Write the marker that says ``stage`` wrote ``folder`` (plus ``extra`` facts about it)."""
    from scratchbert import __version__

    write_json(Path(folder) / MARKER, {"stage": stage, "scratchbert_version": __version__,
                                       "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                       **(extra or {})})


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, stage: str | None = None, overwrite: bool = False,
                      inputs: Iterable = (), marker: dict | None = None, what: str = "--out") -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes ``out`` when the block succeeds.

    ``stage`` names the stage writing it: the folder gets its marker (with ``marker``'s
    extra facts), and an existing ``out`` is replaced only as :func:`check_output` allows.
    Without ``stage`` (plain downloads), an existing non-empty ``out`` is replaced only with
    ``overwrite``. If the block raises, the temporary folder is removed and an existing
    ``out`` is left untouched; readers see the old or the new folder, never a mix.
    """
    inputs = list(inputs)
    if stage is not None:
        out = check_output(out, stage=stage, inputs=inputs, overwrite=overwrite, what=what)
    else:
        out = local_folder(out, what).expanduser().resolve()
        if not overwrite and (out.is_file() or out.is_dir() and _non_empty(out)):
            raise ScratchBertError(f"output folder {out} already exists; remove it or choose another {what}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ScratchBertError(f"cannot create {what} {out}: {e.strerror or e}; choose a folder you can write to") from None
    clean_orphans(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise ScratchBertError(f"cannot write {what} {out}: {e.strerror or e}; choose a folder you can write to") from None
    fd = _lock(tmp)
    try:
        try:
            _open_permissions(tmp)
            yield tmp
            if stage is not None:
                write_marker(tmp, stage, marker)
            _readable_and_synced(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_into_place(tmp, out)
        _fsync(out.parent, os.O_RDONLY | os.O_DIRECTORY)  # the rename itself
    finally:
        os.close(fd)


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    if _exchange(tmp, out):
        # ``tmp`` now holds the old output: remove it (if we are killed first, it is an
        # unlocked .OUT.tmp-* folder that the next write removes)
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink()
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{os.urandom(3).hex()}"
    os.replace(out, old)
    os.replace(tmp, out)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def sibling(out: str | os.PathLike, suffix: str) -> Path:
    """The folder beside ``out`` named ``<out>-<suffix>`` (a stage's logs or checkpoints)."""
    out = Path(out)
    return out.parent / f"{out.name}-{suffix}"


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as pretty JSON (sorted keys, trailing newline)."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())
