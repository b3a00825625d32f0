"""Pretraining checkpoints that know their run: resume only what this run saved, never another's.

A run is what it trains on and how: the dataset (a fingerprint of its examples) and its
tokenizer, the model's size, and the settings that change the training (seed, learning
rate, batch size, schedule, precision, ...). :func:`run_record` writes that down; a run
*claims* its checkpoint folder (``OUT-checkpoints`` or ``--checkpoint-dir``) by writing the
record into it (``scratchbert_run.json``) before its first checkpoint, and copies it into
every checkpoint it mirrors to S3. Then:

* a rerun with the same record resumes from the newest *complete* checkpoint; a damaged one
  (an empty ``trainer_state.json``, a truncated ``model.safetensors``: what a kill or a full
  disk during a save leaves) is skipped with a warning and removed, since the Trainer saves
  that step again;
* a run with another record is refused in one line that names what differs and the fix
  (the same settings, another ``--checkpoint-dir``, or ``--overwrite`` to discard them), so
  it neither continues the other run nor deletes checkpoints a user kept;
* the S3 mirror (``checkpoint_uri``) follows the same rule: its latest checkpoint carries its
  run's record, and a run with another record is refused (use another ``checkpoint_uri``);
* while a run trains, it holds a lock on its folder, so a second process cannot train into
  the same checkpoints at the same time.

Under torchrun only rank 0 claims the folder, writes the checkpoints and mirrors them; every
other rank adds its own RNG state (``rng_state_<rank>.pth``, the Trainer's), which rank 0 also
receives and writes when that rank runs on another node (:func:`rank_states_callback`). A
multi-process checkpoint is complete once ``data_position.json`` is in it: rank 0 writes it
after every rank has saved. The number of processes is part of the run (it sets the batch of
a step and the order of the data), so a resume with another number is refused like any other
change.

The Trainer (``resume_from_checkpoint``, ``save_total_limit``) does the saving, loading and
rotation; this module decides *which* checkpoint, if any, a run may resume.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import struct
import zipfile
from pathlib import Path

from scratchbert.errors import ScratchBertError

log = logging.getLogger(__name__)

RUN_RECORD = "scratchbert_run.json"
DATA_POSITION = "data_position.json"  # scratchbert.shards.DATA_POSITION (not imported: numpy)
RECORD_FORMAT = 1
# PretrainConfig fields that change what a run trains (beyond the dataset and the model size).
# Left out on purpose: where things are written, how often they are logged, evaluated or
# saved, DataLoader workers, the attention kernel and torch.compile (same maths, other code).
TRAINING_FIELDS = ("seed", "learning_rate", "batch_size", "max_steps", "epochs", "time_budget_minutes",
                   "warmup_fraction", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
                   "dropout", "unigram_bias", "mlm_probability", "optimizer", "group_by_length", "init_model")
RESERVE_FIELDS = ("reserve_steps", "reserve_max_minutes")
MODEL_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")


def run_record(cfg, model_config, dataset_info: dict, dataset_fingerprint: str, precision: str,
               world_size: int = 1) -> dict:
    """What a pretraining run is: dataset, tokenizer, model size and the training settings
    (``world_size``: the number of training processes, recorded when above 1)."""
    record = {
        "format": RECORD_FORMAT,
        "dataset": dataset_fingerprint,
        "tokenizer": dataset_info.get("tokenizer_fingerprint", ""),
        "model": {name: getattr(model_config, name) for name in MODEL_FIELDS},
        "training": {**{name: getattr(cfg, name) for name in TRAINING_FIELDS}, "precision": precision},
    }
    if cfg.max_steps > 0:  # a step budget: the epoch count plays no part
        del record["training"]["epochs"]
    if world_size > 1:  # left out of a single process's record, which stays as it was before torchrun
        record["training"]["world_size"] = world_size
    for name in RESERVE_FIELDS:  # where set: they move the run's end (a record without them stays as it was)
        if getattr(cfg, name, 0):
            record["training"][name] = getattr(cfg, name)
    return json.loads(json.dumps(record))  # as it reads back from the file


def differences(old: dict | None, new: dict) -> list[str]:
    """What changed from ``old`` to ``new``, as ``name old -> new`` phrases."""
    if not isinstance(old, dict):
        return ["no record of the run that wrote them"]
    flat_old, flat_new = _flatten(old), _flatten(new)
    for flat in (flat_old, flat_new):  # a single process's record leaves its world size out, a run without a reserve its reserve
        flat.setdefault("training.world_size", 1)
        for name in RESERVE_FIELDS:
            flat.setdefault(f"training.{name}", 0.0)
    names = {"dataset": "dataset", "tokenizer": "tokenizer"}
    labels = {"training.world_size": "training processes"}
    out = []
    for key in sorted(set(flat_old) | set(flat_new)):
        a, b = flat_old.get(key), flat_new.get(key)
        if a != b and not (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b)):
            short = names.get(key) or labels.get(key) or key.split(".")[-1]
            out.append(f"{short} {a} -> {b}" if key not in names else f"another {short}")
    return out


def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in record.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def same_run(old: dict | None, new: dict) -> bool:
    return not differences(old, new)


# --------------------------------------------------------------------------------------------
# Damaged checkpoints
# --------------------------------------------------------------------------------------------


def damage(checkpoint: str | os.PathLike) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (one phrase), or None when it is complete.

    Checked without loading anything: ``trainer_state.json`` (written last by the Trainer)
    parses, ``model.safetensors`` is as long as its header says, and every ``torch.save``
    file (a zip archive) has its central directory, which is written at its very end.
    """
    folder = Path(checkpoint)
    state = folder / "trainer_state.json"
    try:
        data = json.loads(state.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("global_step"), int):
            return "trainer_state.json has no global_step"
    except FileNotFoundError:
        return "trainer_state.json is missing (the save did not finish)"
    except (OSError, ValueError):
        return "trainer_state.json is empty or not valid JSON"
    weights = folder / "model.safetensors"
    if weights.is_file():
        problem = _safetensors_damage(weights)
        if problem:
            return problem
    elif not (folder / "pytorch_model.bin").is_file():
        return "it has no model weights"
    for f in sorted(folder.iterdir()):
        if f.suffix in (".pt", ".pth", ".bin") and f.is_file() and not _zip_ok(f):
            return f"{f.name} is truncated or damaged"
    record = folder / RUN_RECORD
    if record.exists():
        try:
            json.loads(record.read_text())
        except (OSError, ValueError):
            return f"{RUN_RECORD} is damaged"
    position = folder / DATA_POSITION
    ranks = list(folder.glob("rng_state_*.pth"))  # a multi-process run's (one process writes rng_state.pth)
    if not position.exists():
        return f"{DATA_POSITION} is missing (the save of a multi-process run did not finish)" if ranks else None
    try:
        world_size = int(json.loads(position.read_text())["order"].get("world_size", 1))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{DATA_POSITION} is empty or damaged"
    if world_size > 1:
        missing = [r for r in range(world_size) if not (folder / f"rng_state_{r}.pth").is_file()]
        if missing:
            return f"rng_state_{missing[0]}.pth is missing"
    return None


def _safetensors_damage(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                return f"model.safetensors is truncated ({size} bytes, its header alone needs {header_len + 8})"
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, ValueError):
        return "model.safetensors is empty or not a safetensors file"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    expected = 8 + header_len + end
    if size < expected:
        return f"model.safetensors is truncated ({size} of {expected} bytes)"
    return None


def _zip_ok(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile):
        return False


def _step(checkpoint: str | os.PathLike | None) -> int:
    """The step of a ``checkpoint-N`` folder or name (-1 for none)."""
    if checkpoint is None:
        return -1
    tail = Path(checkpoint).name.split("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def latest_complete(checkpoint_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` of a folder; newer damaged ones are removed with a warning."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and _step(p) >= 0), key=_step, reverse=True)
    for checkpoint in found:
        problem = damage(checkpoint)
        if problem is None:
            return str(checkpoint)
        log.warning("skipping the damaged checkpoint %s (%s); the run resumes from an earlier one", checkpoint, problem)
        shutil.rmtree(checkpoint, ignore_errors=True)  # this run's, unusable; the Trainer saves that step again
    return None


# --------------------------------------------------------------------------------------------
# Claiming a checkpoint folder for a run
# --------------------------------------------------------------------------------------------

_LOCKS: dict[str, int] = {}  # checkpoint folder -> fd holding its lock, for this process


def _lock(folder: Path) -> None:
    key = str(folder)
    if key in _LOCKS:  # this process holds it already (a rerun in the same process)
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ScratchBertError(f"checkpoint folder {folder} is in use by another pretraining process; wait for it to "
                               "finish, or give this run another --checkpoint-dir") from None
    _LOCKS[key] = fd


def _unlock(folder: Path) -> None:
    fd = _LOCKS.pop(str(folder), None)
    if fd is not None:
        os.close(fd)


def _has_checkpoints(folder: Path) -> bool:
    return any(p.is_dir() and p.name.startswith("checkpoint-") for p in folder.iterdir())


def _run_made(child: Path) -> bool:
    """Whether ``child`` of a checkpoint folder is what a pretraining run writes there: its
    checkpoints, its record (and the record's temporary file), the Trainer's TensorBoard runs."""
    name = child.name
    return name.startswith(("checkpoint-", f".{RUN_RECORD}.tmp-")) or name in (RUN_RECORD, "runs")


def _clear(folder: Path) -> None:
    """Remove what pretraining runs wrote into ``folder``, and nothing else: a person's files stay.
    The record goes last: a kill in between leaves checkpoints that their run still claims."""
    for child in sorted(folder.iterdir(), key=lambda child: child.name == RUN_RECORD):
        if not _run_made(child):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _read_record(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Checkpoints:
    """A run's claim on its checkpoint folder (and S3 mirror): see the module docstring.

    ``resume`` is the checkpoint to resume from, or None for a fresh start.
    """

    def __init__(self, folder: str | os.PathLike, record: dict, *, overwrite: bool = False, uri: str = ""):
        self.folder = Path(folder).expanduser().resolve()
        self.record = record
        self.uri = uri.rstrip("/")
        remote = self._check_remote() if self.uri else None
        self._claim(overwrite)
        self.resume = latest_complete(self.folder)
        # the mirror's when it is further on (a local copy lost or damaged since): never an older step
        if remote is not None and _step(remote["version"]) > _step(self.resume):
            self.resume = self._fetch(remote) or self.resume

    # the local folder

    def _claim(self, overwrite: bool) -> None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise ScratchBertError(f"--checkpoint-dir {folder} is a file; give a folder")
        if folder.is_dir():
            found = _read_record(folder / RUN_RECORD)
            empty = not any(folder.iterdir())
            if found is not None and not same_run(found, self.record) and not _has_checkpoints(folder):
                # a recorded run that stopped before its first checkpoint: nothing to keep, unless
                # it is still training (its lock: its record and TensorBoard files are in use)
                _lock(folder)
                log.info("%s holds no checkpoint of its earlier run; this run takes it over", folder)
                _clear(folder)
            elif not empty and not same_run(found, self.record):
                if found is None and not _has_checkpoints(folder):  # no run's: a person's folder, never cleared
                    raise ScratchBertError(f"--checkpoint-dir {folder} holds files that are not pretraining checkpoints; "
                                           "give an empty or new folder")
                what = ("belong to another pretraining run (" + ", ".join(differences(found, self.record)) + ")"
                        if found is not None else "were not written by a scratchbert pretraining run that recorded itself")
                if not overwrite:
                    raise ScratchBertError(
                        f"the checkpoints in {folder} {what}; rerun with the same settings to resume that run, give this "
                        "run another --checkpoint-dir, or pass --overwrite to discard them")
                _lock(folder)
                log.warning("discarding the checkpoints in %s, which %s (--overwrite)", folder, what)
                _clear(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ScratchBertError(f"cannot create --checkpoint-dir {folder}: {e.strerror or e}; choose a folder you can write to") from None
        _lock(folder)
        tmp = folder / f".{RUN_RECORD}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self.record, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, folder / RUN_RECORD)

    def finish(self, keep: bool) -> None:
        """After a successful run: remove its checkpoints unless ``keep`` (and the folder, if
        nothing else is in it), and release it."""
        if not keep:
            _clear(self.folder)
            try:
                self.folder.rmdir()
            except OSError:  # files of a person's in it (or gone already): the folder stays
                pass
        _unlock(self.folder)

    # the S3 mirror

    def _check_remote(self) -> dict | None:
        """The mirror's latest checkpoint manifest when it is this run's; None when there is none yet."""
        from scratchbert import storage

        try:
            manifest = storage.read_manifest(self.uri)
        except storage.NotFound:
            return None
        try:
            found = json.loads(storage.read_object(manifest["uri"] + RUN_RECORD))
        except (storage.NotFound, ValueError):
            found = None
        if not same_run(found, self.record):
            raise ScratchBertError(
                f"the checkpoints mirrored at {self.uri} belong to another pretraining run "
                f"({', '.join(differences(found, self.record))}); rerun with the same settings to resume that run, "
                "or give this run another checkpoint_uri")
        return manifest

    def _fetch(self, manifest: dict) -> str | None:
        from scratchbert import storage

        target = self.folder / manifest["version"]
        if target.exists():
            shutil.rmtree(target)  # a damaged local copy: latest_complete skipped it
        storage.fetch_published(manifest["uri"], target)
        problem = damage(target)
        if problem:
            log.warning("the checkpoint mirrored at %s is damaged (%s); not resuming from it", manifest["uri"], problem)
            shutil.rmtree(target, ignore_errors=True)
            return None
        log.info("resuming from the checkpoint mirrored at %s", manifest["uri"])
        return str(target)

    def callbacks(self) -> list:
        """Trainer callbacks: the record into each saved checkpoint, then its mirror to S3 (if any)."""
        from transformers import TrainerCallback

        from scratchbert import storage

        claim = self

        class _Record(TrainerCallback):
            def on_save(self, args, state, control, **kw):  # on rank 0, the one process that claims
                checkpoint = claim.folder / f"checkpoint-{state.global_step}"
                if not checkpoint.is_dir():
                    return
                (checkpoint / RUN_RECORD).write_text(json.dumps(claim.record, indent=2, sort_keys=True) + "\n")
                if not claim.uri:
                    return
                try:
                    storage.read_manifest(f"{claim.uri}/{checkpoint.name}")
                    log.info("%s/%s is mirrored already (an earlier attempt of this run)", claim.uri, checkpoint.name)
                except storage.NotFound:
                    storage.publish(checkpoint, claim.uri, version=checkpoint.name)

        return [_Record()]


def rank_states_callback():
    """A Trainer callback, for every process and first among the checkpoint callbacks: once each
    rank has saved its part of a checkpoint, rank 0 gets every rank's RNG state and writes those
    that are not in its folder (ranks on other nodes write theirs to their own disks). The gather
    is also the barrier after which rank 0 completes the checkpoint (data position, run record,
    mirror). Nothing happens in a single process."""
    from transformers import TrainerCallback

    from scratchbert import distributed

    class _RankStates(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if args.world_size <= 1:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            mine = folder / f"rng_state_{args.process_index}.pth"
            states = distributed.gather_objects(mine.read_bytes() if mine.is_file() else None)
            if states is None:
                return
            for rank, data in enumerate(states):
                target = folder / f"rng_state_{rank}.pth"
                if data is not None and not target.is_file():
                    tmp = folder / f".{target.name}.tmp"
                    tmp.write_bytes(data)
                    os.replace(tmp, target)

    return _RankStates()


def fetch_mirrored(uri: str, checkpoint: str | os.PathLike) -> str:
    """Download the checkpoint named like ``checkpoint`` (``checkpoint-N``) from the mirror at
    ``uri`` into ``checkpoint``: the processes of a node that does not share rank 0's disk take
    the checkpoint rank 0 resumes from this way. Returns its path; raises if it is not there."""
    from scratchbert import storage

    target = Path(checkpoint)
    try:
        manifest = storage.read_manifest(f"{uri.rstrip('/')}/{target.name}")
    except storage.NotFound:
        raise ScratchBertError(f"{target.name} is not mirrored at {uri}, so this node cannot resume from it; "
                               "give --checkpoint-dir a folder every node shares") from None
    if target.exists():
        shutil.rmtree(target)
    storage.fetch_published(manifest["uri"], target)
    return str(target)
