"""The dataset's on-disk format (Arrow shards and an index), its writer, and its readers.

A dataset folder, as ``scratchbert dataset`` writes it::

    scratchbert_dataset.json        the index: format, tokenizer fingerprint, build parameters and,
                                    per split, its shard files with their example and token counts
    train/part-00000-00000.arrow    shards: Arrow IPC streams (the format of the ``datasets``
    train/part-00000-00001.arrow    cache, so ``datasets.Dataset.from_file`` opens one), each at
    validation/part-00000-00000.arrow   most about ``shard_bytes``; part k of a fan-out writes part-k-*
    token_counts.npy                how often each token id occurs in the training examples
    tokenizer/                      the tokenizer the examples were made with
    metrics.json

Columns: ``input_ids`` (int32 lists), ``token_type_ids`` (int8 lists), ``next_sentence_label``
(int8), ``length`` (int16).

Readers, none of which loads a split into memory:

* :func:`load_split`: a split as one ``datasets.Dataset`` over its memory-mapped shards (the
  validation split, evaluation);
* :class:`ShardedExamples`: the training examples by global index, read from memory-mapped
  shards of which only the few in use are kept open, so resident memory stays bounded
  however large the split;
* :class:`ShardBatchSampler`: the training order, a pure function of (seed, epoch): blocks
  of ``BLOCK`` consecutive examples from anywhere in the split, in a shuffled order, cut into
  windows of ``window`` examples that are shuffled within (the shuffle buffer), grouped by
  length within each window; batches dealt to ``rank`` of ``world_size``. A run resumed at
  step N re-creates the same order and starts at batch N, with nothing read for the skipped
  batches.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from scratchbert.errors import ScratchBertError
from scratchbert.outputs import local_folder, read_json, write_json

INDEX = "scratchbert_dataset.json"
FORMAT = "scratchbert-dataset/2"
TOKEN_COUNTS = "token_counts.npy"
DATA_POSITION = "data_position.json"
SPLITS = ("train", "validation")
# Examples shuffled together (the shuffle buffer). Memory-mapped pages of the window's shards
# are what the reader keeps resident: about 2^18 x 0.6 KB = 170 MB at sequence length 128,
# and the whole dataset of a WikiText-2-sized corpus cut five times fits in one window.
DEFAULT_WINDOW = 1 << 18
# Consecutive examples the order keeps together (about 300 KB at sequence length 64): a window
# gathers its blocks from the whole split, so it mixes every part of the corpus (a group's
# dupes, written side by side, included), yet reads whole pages.
BLOCK = 1024
MEGABATCH = 50  # batches sorted by length together (transformers' LengthGroupedSampler uses 50)
_BATCH_OVERHEAD = 512  # about the bytes of Arrow metadata per record batch (the exact size is then checked)
_END_OF_STREAM = 8


def features():
    """The ``datasets.Features`` of an example row."""
    from datasets import Features, Sequence, Value

    return Features({
        "input_ids": Sequence(Value("int32")),
        "token_type_ids": Sequence(Value("int8")),
        "next_sentence_label": Value("int8"),
        "length": Value("int16"),
    })


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class ShardWriter:
    """Writes one split's examples into ``<folder>/<split>/<prefix>-NNNNN.arrow`` files of at
    most about ``shard_bytes`` each (a single example larger than that gets a shard of its own).

    :meth:`write` takes a block of examples as flat arrays: every example's tokens one after
    the other (``ids``, ``types``), ``offsets`` (n + 1 positions into them) and ``labels``.
    """

    def __init__(self, folder: str | os.PathLike, split: str, prefix: str, shard_bytes: int):
        if shard_bytes < 1024:
            raise ScratchBertError(f"shard size {shard_bytes} bytes is too small; use 1000000 or more")
        self.folder, self.split, self.prefix, self.limit = Path(folder), split, prefix, shard_bytes
        (self.folder / split).mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self._schema = features().arrow_schema
        self._schema_bytes = self._schema.serialize().size + 16
        self._sink = self._writer = None
        self._examples = self._tokens = 0

    def write(self, ids: np.ndarray, offsets: np.ndarray, types: np.ndarray, labels: np.ndarray) -> None:
        import pyarrow as pa

        n = len(labels)
        lengths = np.diff(offsets)
        cost = np.cumsum(lengths * 5 + 11)  # stored bytes: 4 + 1 per token, two offsets, label, length
        start = 0
        while start < n:
            if self._writer is None:
                self._open()
            room = self.limit - self._written() - _END_OF_STREAM
            before = cost[start - 1] if start else 0
            k = int(np.searchsorted(cost[start:] - before, room - _BATCH_OVERHEAD, side="right"))
            batch = None
            while k > 0:  # the estimate, shrunk until the batch's exact IPC size fits
                batch = self._batch(ids, offsets, types, labels, lengths, start, start + k)
                size = pa.ipc.get_record_batch_size(batch)
                if size <= room:
                    break
                k, batch = min(k - 1, int(k * room / size)), None
            if batch is None:
                if self._examples:
                    self._close()
                    continue
                k = 1  # one example larger than a shard: a shard of its own
                batch = self._batch(ids, offsets, types, labels, lengths, start, start + 1)
            self._writer.write_batch(batch)
            self._examples += k
            self._tokens += int(offsets[start + k] - offsets[start])
            start += k
            if self.limit - self._written() - _END_OF_STREAM < _BATCH_OVERHEAD + 64:
                self._close()

    def _written(self) -> int:
        # The stream writer sends its schema message with the first batch.
        return self._sink.tell() or self._schema_bytes

    def close(self) -> list[dict]:
        """Finish the last shard; return the shard entries of the index, in order."""
        if self._writer is not None:
            self._close()
        return self.shards

    def _open(self) -> None:
        import pyarrow as pa

        name = f"{self.split}/{self.prefix}-{len(self.shards):05d}.arrow"
        self._name = name
        self._sink = pa.OSFile(str(self.folder / name), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self._schema)

    def _batch(self, ids, offsets, types, labels, lengths, a: int, b: int):
        import pyarrow as pa

        lo, hi = int(offsets[a]), int(offsets[b])
        rel = pa.array((offsets[a:b + 1] - lo).astype(np.int32))
        columns = [
            pa.ListArray.from_arrays(rel, pa.array(ids[lo:hi], pa.int32()), type=self._schema.field("input_ids").type),
            pa.ListArray.from_arrays(rel, pa.array(types[lo:hi], pa.int8()), type=self._schema.field("token_type_ids").type),
            pa.array(labels[a:b], pa.int8()),
            pa.array(lengths[a:b], pa.int16()),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self._schema)

    def _close(self) -> None:
        self._writer.close()
        self._sink.close()
        self.shards.append({"file": self._name, "examples": self._examples, "tokens": self._tokens,
                            "bytes": (self.folder / self._name).stat().st_size})
        self._sink = self._writer = None
        self._examples = self._tokens = 0


def write_index(folder: str | os.PathLike, index: dict) -> dict:
    """Write the index (with its ``format`` and an ``id`` naming this exact set of shards)."""
    index = {**index, "format": FORMAT}
    index["id"] = hashlib.sha256(json.dumps([index["tokenizer_fingerprint"], index["splits"]], sort_keys=True)
                                 .encode()).hexdigest()[:16]
    write_json(Path(folder) / INDEX, index)
    return index


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_index(folder: str | os.PathLike, *, complete: bool = True) -> dict:
    """The index of a dataset folder, checked; ``complete`` refuses one part of a fan-out."""
    folder = local_folder(folder, "--dataset")
    if not (folder / INDEX).is_file():
        raise ScratchBertError(f"{folder} is not a scratchbert dataset (no {INDEX}); build it with `scratchbert dataset --out {folder}`")
    index = read_json(folder / INDEX)
    if index.get("format") != FORMAT:
        raise ScratchBertError(f"dataset {folder} was written by an older scratchbert (format {index.get('format', 1)}); build it again with `scratchbert dataset`")
    part = index.get("part")
    if complete and part is not None:
        raise ScratchBertError(f"{folder} is part {part['index']} of {part['count']} of a dataset; merge the parts with `scratchbert dataset-merge` first")
    return index


def shard_files(folder: str | os.PathLike, split: str, index: dict | None = None) -> list[Path]:
    folder = Path(folder)
    index = index or read_index(folder)
    if split not in index["splits"]:
        raise ScratchBertError(f"dataset {folder} has no split {split!r} (it has {sorted(index['splits'])})")
    return [folder / s["file"] for s in index["splits"][split]["shards"]]


def load_split(folder: str | os.PathLike, split: str, index: dict | None = None):
    """The split as one ``datasets.Dataset`` over its memory-mapped shards (nothing is loaded)."""
    from datasets import Dataset, concatenate_datasets

    parts = [Dataset.from_file(str(f)) for f in shard_files(folder, split, index)]
    if not parts:
        return Dataset.from_dict({k: [] for k in features()}, features=features())
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


class _Shard:
    """One memory-mapped shard: numpy views of its record batches' buffers (no copies)."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        self.chunks = []
        starts = [0]
        for batch in self.table.to_batches():
            ids, types = batch.column("input_ids"), batch.column("token_type_ids")
            self.chunks.append((ids.offsets.to_numpy(), ids.values.to_numpy(), types.offsets.to_numpy(),
                                types.values.to_numpy(), batch.column("next_sentence_label").to_numpy()))
            starts.append(starts[-1] + batch.num_rows)
        self.starts = np.asarray(starts)

    def example(self, j: int) -> dict:
        c = int(np.searchsorted(self.starts, j, side="right")) - 1
        k = j - self.starts[c]
        id_off, id_val, ty_off, ty_val, labels = self.chunks[c]
        return {"input_ids": id_val[id_off[k]:id_off[k + 1]], "token_type_ids": ty_val[ty_off[k]:ty_off[k + 1]],
                "next_sentence_label": int(labels[k])}

    def lengths(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        column = self.table.column("length").slice(start, None if stop is None else max(stop - start, 0))
        return np.concatenate([c.to_numpy() for c in column.chunks]).astype(np.int16) \
            if len(column) else np.zeros(0, np.int16)


class Batch(list):
    """A list (a batch's example indices, or its examples) with ``mask_seed``, the seed its MLM
    masks are drawn from (:class:`scratchbert.pretraining_data.MlmNspCollator`).

    :class:`ShardBatchSampler` gives each batch of an epoch its own seed (from the run's seed,
    the epoch, the step and the rank), and :meth:`ShardedExamples.__getitems__` passes it on to
    the examples; ``window`` tells the reader when the order has moved on to another window. A
    batch is then masked alike whenever it is read: a resumed run masks as the uninterrupted
    run did, although the DataLoader reads ahead of the step that a checkpoint records (masks
    drawn from the process's random numbers would be drawn before the save and again after the
    resume), and however many DataLoader workers there are.
    """

    mask_seed: int | None = None
    window: tuple[int, int] | None = None  # (epoch, window) the batch's examples are drawn from


def _stamp(path: Path) -> tuple | None:
    """What tells one file from another written in its place: its inode, size and change time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class ShardedExamples:
    """A split's examples by global index (shard by shard, in index order), for a ``DataLoader``.

    Shards are memory-mapped when first needed and the least recently used is closed once
    more than ``max_open`` are open; all are closed when the batches come from a new window
    of :class:`ShardBatchSampler`'s order, so the resident memory is bounded by the window's
    pages, not by the split. Examples come as dicts of numpy views (``input_ids``,
    ``token_type_ids``) and an int ``next_sentence_label``; :class:`MlmNspCollator` takes them.
    Picklable without its open shards, so every DataLoader worker opens its own.
    """

    def __init__(self, folder: str | os.PathLike, split: str = "train", max_open: int = 8):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self.files = shard_files(self.folder, split, self.index)
        self.sizes = [s["examples"] for s in self.index["splits"][split]["shards"]]
        self.offsets = np.cumsum([0, *self.sizes])
        self.max_open = max(1, max_open)
        self._open: OrderedDict[int, _Shard] = OrderedDict()
        self._window = None
        # which files these are: a shard opened later must be the one indexed here, not one of
        # a dataset written into the same folder since (a rerun of `scratchbert dataset`)
        self.stamps = [_stamp(f) for f in self.files]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, index within the shard) of global example ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return s, int(i - self.offsets[s])

    def shard(self, s: int) -> _Shard:
        shard = self._open.get(s)
        if shard is None:
            if _stamp(self.files[s]) != self.stamps[s]:
                raise ScratchBertError(f"dataset {self.folder} was replaced while this run read it ({self.files[s].name} is "
                                       "another file now: a rerun of `scratchbert dataset` into it?); its examples would "
                                       "mix two datasets, so this run stops; while a run reads a dataset, build others "
                                       "into another --out")
            shard = self._open[s] = _Shard(self.files[s])
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        self._open.move_to_end(s)
        return shard

    def lengths(self, s: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Token counts of shard ``s``'s examples ``start:stop`` (read from its ``length`` column)."""
        return self.shard(s).lengths(start, stop)

    def order(self, batch_size: int, *, group_by_length: bool = True, **kw) -> ShardBatchSampler:
        """The training order over these examples (:class:`ShardBatchSampler`, ``kw`` passed on),
        with the open-shard limit raised to what its windows touch, and a seam more."""
        sampler = ShardBatchSampler(self.sizes, batch_size, lengths=self.lengths if group_by_length else None, **kw)
        self.max_open = shards_per_window(self.sizes, sampler.window, sampler.block) + 1
        return sampler

    def __getitem__(self, i: int) -> dict:
        s, j = self.locate(int(i))
        return self.shard(s).example(j)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        window = getattr(indices, "window", None)
        if window is not None and window != self._window:
            self._open.clear()  # examples still in use keep their buffers alive
            self._window = window
        examples = Batch(self[i] for i in indices)
        examples.mask_seed = getattr(indices, "mask_seed", None)
        return examples

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": OrderedDict()}


# --------------------------------------------------------------------------------------------
# Training order
# --------------------------------------------------------------------------------------------


class ShardBatchSampler:
    """Batches of global example indices in training order, for ``DataLoader(batch_sampler=...)``.

    The order of an epoch depends only on ``seed`` and the epoch (:meth:`set_epoch`):

    1. every shard is cut into blocks of ``block`` consecutive examples, and the blocks of all
       shards are put in one random order;
    2. their examples, one block after the other, are cut into windows of ``window``
       examples (a multiple of the global batch, 4.), and each window is shuffled: the shuffle
       buffer, whose memory-mapped pages are all the reader keeps resident. A window thus
       draws on the whole split;
    3. with ``lengths`` (a function: shard, start, stop -> those examples' token counts), each
       window is grouped by length as transformers' ``LengthGroupedSampler`` does: megabatches of
       50 batches sorted longest first (the epoch's longest example leads, so an
       out-of-memory error comes early), so batches are padded little;
    4. with ``world_size`` processes, the order is cut into *global* batches of
       ``batch_size * world_size`` examples (the job's batch: the order a single process with
       that batch size would read), and each is dealt out: rank ``r`` takes its examples
       ``r, r + world_size, ...``, so every rank gets ``batch_size`` examples of alike lengths.

    Every example comes exactly once per epoch, to one rank, and every rank takes the same
    number of steps (DDP needs that): the epoch's last global batch, when smaller, is dealt the
    same way (ranks get sizes that differ by one at most), and when it has fewer examples than
    there are ranks, the batch before it takes them (a step of one example more on some ranks).
    An epoch has ``len(self)`` steps whatever the seed, so a resumed run finds its place from
    the step count alone, and nothing is read for the skipped batches. Every rank computes the
    same global order from indices alone, so ranks need no communication to agree on it
    (:func:`trainer_dataloader` gives it to the Trainer).
    """

    def __init__(self, shard_sizes: Sequence[int], batch_size: int, *, seed: int = 0, window: int = DEFAULT_WINDOW,
                 lengths: Callable[[int, int, int], np.ndarray] | None = None, rank: int = 0, world_size: int = 1,
                 block: int = BLOCK):
        if batch_size < 1 or window < 1 or block < 1:
            raise ScratchBertError(f"batch size {batch_size}, shuffle window {window} and block {block} must be positive")
        if not 0 <= rank < world_size:
            raise ScratchBertError(f"rank {rank} must lie in [0, world size {world_size})")
        self.sizes = [int(n) for n in shard_sizes]
        self.offsets = np.cumsum([0, *self.sizes])
        if 0 < self.examples < world_size:
            raise ScratchBertError(f"the training split has {self.examples} examples, fewer than the {world_size} "
                                   "training processes; train with fewer processes or on more data")
        self.batch_size, self.seed, self.lengths = batch_size, seed, lengths
        self.rank, self.world_size = rank, world_size
        self.window = max(self.global_batch, window // self.global_batch * self.global_batch)
        self.block = block
        # (shard, first example within it) of every block, in shard order
        counts = -(-np.asarray(self.sizes, dtype=np.int64) // block)
        shard = np.repeat(np.arange(len(self.sizes)), counts)
        first = (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)) * block
        self.blocks = np.stack([shard, first], axis=1)
        self.epoch = 0

    @property
    def examples(self) -> int:
        return int(self.offsets[-1])

    @property
    def global_batch(self) -> int:
        """Examples per step over all ranks."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Steps (batches per rank) of an epoch."""
        full, rest = divmod(self.examples, self.global_batch)
        return full + (rest >= self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def describe(self) -> dict:
        """What fixes the order (recorded with the data position in every checkpoint)."""
        return {"seed": self.seed, "batch_size": self.batch_size, "window": self.window, "block": self.block,
                "group_by_length": self.lengths is not None, "world_size": self.world_size,
                "examples": self.examples, "shards": len(self.sizes)}

    def __iter__(self) -> Iterator[Batch]:
        held = None  # one global batch held back, to take in a last one too small to deal out
        step = 0
        for batch in self.global_batches():
            if held is not None and len(batch) < self.world_size:
                held = np.concatenate([held, batch])
                continue
            if held is not None:
                yield self._batch(held, step)
                step += 1
            held = batch
        if held is not None and len(held) >= self.world_size:
            yield self._batch(held, step)

    def _batch(self, global_batch: np.ndarray, step: int) -> Batch:
        batch = Batch(global_batch[self.rank::self.world_size].tolist())
        batch.mask_seed = int(np.random.SeedSequence([self.seed, self.epoch, step, self.rank]).generate_state(1)[0])
        batch.window = (self.epoch, step * self.global_batch // self.window)
        return batch

    def global_batches(self) -> Iterator[np.ndarray]:
        """The epoch's global batches (``global_batch`` examples, the last one maybe fewer), all ranks together."""
        rng = np.random.default_rng([self.seed, self.epoch])
        first = True
        for ids, lengths in self._windows(rng.permutation(len(self.blocks))):
            perm = rng.permutation(len(ids))
            ids = ids[perm]
            if lengths is not None:
                ids = group_by_length(ids, lengths[perm], self.global_batch, first)
            first = False
            for a in range(0, len(ids), self.global_batch):
                yield ids[a:a + self.global_batch]

    def _windows(self, block_order) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        pieces: list[tuple[int, int, int]] = []  # (shard, start, stop) in the window's order
        n = 0
        for b in block_order:
            s, pos = (int(x) for x in self.blocks[b])
            end = min(pos + self.block, self.sizes[s])
            while pos < end:
                take = min(end - pos, self.window - n)
                pieces.append((s, pos, pos + take))
                n, pos = n + take, pos + take
                if n == self.window:
                    yield self._window_of(pieces)
                    pieces, n = [], 0
        if n:
            yield self._window_of(pieces)

    def _window_of(self, pieces: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray | None]:
        """The window's example ids and, with ``lengths``, their token counts, read shard by shard
        (each shard opened once, not once per block)."""
        ids = np.concatenate([np.arange(self.offsets[s] + a, self.offsets[s] + b) for s, a, b in pieces])
        if self.lengths is None:
            return ids, None
        lens: list[np.ndarray | None] = [None] * len(pieces)
        for k in sorted(range(len(pieces)), key=lambda k: pieces[k]):
            lens[k] = self.lengths(*pieces[k])
        return ids, np.concatenate(lens)


def shards_per_window(shard_sizes: Sequence[int], window: int, block: int = BLOCK) -> int:
    """The most shards one window of ``window`` examples in :class:`ShardBatchSampler`'s order
    can touch (for the reader's open-shard limit): one per block it holds (the shortest blocks,
    shards' last ones, make the most), at most every shard."""
    # only a shard's last block can be short: the rest are whole
    short = sorted(n - (n - 1) // block * block for n in shard_sizes if n)
    whole = sum((n - 1) // block for n in shard_sizes if n)
    total, count = 0, 0
    for size in short:
        if total >= window:
            break
        total, count = total + size, count + 1
    if total < window and whole:
        count += min(whole, -(-(window - total) // block))
    return min(count + 1, sum(1 for n in shard_sizes if n))


def group_by_length(ids: np.ndarray, lengths: np.ndarray, batch_size: int, longest_first: bool) -> np.ndarray:
    """``ids`` in pools of up to 50 batches' worth (``MEGABATCH``), each pool sorted longest first;
    with ``longest_first`` the longest window of all leads (an out-of-memory error shows at once).
    Shared by pretraining's sampler and QA fine-tuning's :class:`scratchbert.qa.LengthBuckets`."""
    mult = max(1, min(len(ids) // (batch_size * 4), MEGABATCH))
    size = mult * batch_size
    out = np.empty_like(ids)
    heads = []
    for a in range(0, len(ids), size):
        order = np.argsort(-lengths[a:a + size].astype(np.int32), kind="stable")
        out[a:a + size] = ids[a:a + size][order]
        heads.append((int(lengths[a:a + size][order[0]]), a))
    if longest_first and heads:
        _, a = max(heads, key=lambda h: (h[0], -h[1]))
        out[0], out[a] = out[a], out[0]
    return out


def trainer_dataloader(trainer, examples: ShardedExamples, sampler: ShardBatchSampler):
    """The training ``DataLoader`` of a Hugging Face ``Trainer`` over ``examples`` in ``sampler``'s
    order, with the Trainer's collator and DataLoader settings, prepared by its accelerator.

    The Trainer sets the sampler's epoch at the start of each epoch and, on resume, skips the
    batches already trained by index (accelerate's ``skip_first_batches``), reading nothing.
    With several processes the sampler deals the batches itself (its ``rank`` and
    ``world_size`` must be the process's), so accelerate's own dealing is turned off, as the
    Trainer does for its rank-aware samplers.
    """
    from functools import partial

    from torch.utils.data import DataLoader
    from transformers.trainer_utils import seed_worker

    args = trainer.args
    workers = args.dataloader_num_workers
    loader = DataLoader(examples, batch_sampler=sampler, collate_fn=trainer.data_collator, num_workers=workers,
                        pin_memory=args.dataloader_pin_memory, persistent_workers=args.dataloader_persistent_workers and workers > 0,
                        prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
                        worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index))
    if (sampler.rank, sampler.world_size) != (args.process_index, args.world_size):
        raise ScratchBertError(f"the training order is for rank {sampler.rank} of {sampler.world_size}, but this is process "
                               f"{args.process_index} of {args.world_size}; build the sampler with this process's rank")
    prepared = trainer.accelerator.prepare(loader)
    dealer = getattr(prepared, "batch_sampler", None)
    if getattr(dealer, "batch_sampler", None) is sampler:  # accelerate's BatchSamplerShard: a pass-through
        # even_batches off: it would fill an epoch's smaller last batch up with the epoch's first examples
        dealer.num_processes, dealer.process_index, dealer.even_batches = 1, 0, False
        # the Trainer reaches a sampler one wrapper down; on a resume accelerate's skipping wrapper
        # goes over this one, which then passes the epoch on (else a later epoch replays the first's order)
        dealer.set_epoch = sampler.set_epoch
    return prepared


def data_position(sampler: ShardBatchSampler, dataset_id: str, batches_done: int) -> dict:
    """Where training stands in the data after ``batches_done`` batches (per rank), and what
    fixes the order: written into every checkpoint as ``data_position.json``."""
    per_epoch = max(len(sampler), 1)
    epoch, batch = divmod(batches_done, per_epoch)
    return {"epoch": epoch, "batch_in_epoch": batch, "batches": batches_done,
            "examples": epoch * sampler.examples + batch * sampler.global_batch,  # all ranks together
            "order": {"dataset": dataset_id, **sampler.describe()}}


def check_data_position(checkpoint: str | os.PathLike, sampler: ShardBatchSampler, dataset_id: str) -> dict | None:
    """The data position recorded in ``checkpoint``, checked against this run's order; None if
    the checkpoint has none. Raises when resuming would read the data in another order."""
    path = Path(checkpoint) / DATA_POSITION
    if not path.is_file():
        return None
    recorded = read_json(path)
    expected = {"dataset": dataset_id, **sampler.describe()}
    missing = [k for k in expected if k not in recorded.get("order", {})]  # e.g. block: whole shards in a row
    if missing:
        raise ScratchBertError(
            f"checkpoint {checkpoint} was trained in the order of an earlier scratchbert (no {', '.join(missing)} "
            "recorded), which this one no longer reads; start afresh with another --checkpoint-dir")
    changed = sorted(k for k in expected if recorded["order"][k] != expected[k])
    if changed:
        raise ScratchBertError(
            f"checkpoint {checkpoint} was trained with another data order ({', '.join(changed)} changed); "
            f"resume with the same dataset, seed and batch size, or start afresh with another --checkpoint-dir")
    return recorded


def data_position_callback(sampler: ShardBatchSampler, dataset_id: str, resume: str | None = None):
    """A Trainer callback that writes ``data_position.json`` into every checkpoint (rank 0 alone,
    the checkpoint's last file) and, on a resumed run, checks the checkpoint's against this
    run's data order first."""
    from transformers import TrainerCallback

    class _DataPosition(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if resume:
                check_data_position(resume, sampler, dataset_id)

        def on_save(self, args, state, control, **kw):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if args.should_save and folder.is_dir():
                write_json(folder / DATA_POSITION, data_position(
                    sampler, dataset_id, state.global_step * args.gradient_accumulation_steps))

    return _DataPosition()
