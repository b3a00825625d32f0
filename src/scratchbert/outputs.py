"""Output folders that are either complete or absent.

Every stage writes into a temporary sibling folder and renames it into place only when it
has finished, so an error (or a kill) never leaves a half-written output folder behind
under the requested name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes ``out`` when the block succeeds.

    If the block raises, the temporary folder is removed and an existing ``out`` is left
    untouched. The swap uses ``os.replace`` on the same filesystem, so readers see either
    the old or the new folder, never a mix.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not overwrite:
        from scratchbert.errors import ScratchBertError

        raise ScratchBertError(f"output folder {out} already exists; remove it or choose another --out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.is_dir():
            os.replace(out, old)
        else:
            out.unlink()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sibling(out: str | os.PathLike, suffix: str) -> Path:
    """The folder beside ``out`` named ``<out>-<suffix>`` (a stage's logs or checkpoints)."""
    out = Path(out)
    return out.parent / f"{out.name}-{suffix}"


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as pretty JSON (sorted keys, trailing newline)."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())
