"""Pretraining's data order on a real dataset: how much of the split it mixes in, and what stays mapped.

    python benchmarks/data_order.py --dataset DIR [--batch-size 64] [--order-window 262144] [--memory-window 65536]

DIR is a `scratchbert dataset` folder (run-local keeps one under its outputs, `dataset-merge/dataset`).
Arms, in one run:

* the order: ``block`` = 1,024 examples (now) against whole shards (``block`` as large as a shard:
  the order before blocks, shards in a row). For the first 10%, 50% and 87% of an epoch it
  reports the share of the split's examples, in tenths by position (the corpus in its
  order, which is also a group's dupes side by side), that the order has reached;
* the reader's memory over ``--windows`` windows of the block order: the last window's shards
  unmapped when a new window starts (now), against kept open (least recently used closed only
  past the open-shard limit). Every example read is touched, as the collator does.

Prints JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import emit

from scratchbert import shards

WHOLE_SHARDS = 1 << 62


def file_backed_mb() -> int:
    """This process's resident file-backed memory (the memory-mapped shards and the libraries)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("RssFile:"))


def coverage(sizes: list[int], batch_size: int, window: int, block: int, seed: int) -> dict:
    """Tenths of the split (by example position) reached by the first 10%, 50% and 87% of an epoch."""
    sampler = shards.ShardBatchSampler(sizes, batch_size, seed=seed, window=window, block=block)
    seen = np.zeros(sampler.examples, bool)
    marks = {round(f * len(sampler)): f for f in (0.1, 0.5, 0.87)}
    tenths = np.arange(sampler.examples) * 10 // sampler.examples
    out = {}
    for step, batch in enumerate(sampler, 1):
        seen[batch] = True
        if step in marks:
            share = np.bincount(tenths, weights=seen, minlength=10) / np.bincount(tenths, minlength=10)
            out[f"first_{marks[step]:.0%}"] = {"tenths_reached": int((share > 0).sum()),
                                               "least_reached_tenth": round(float(share.min()), 3),
                                               "share_per_tenth": [round(float(x), 2) for x in share]}
    return out


def memory(folder: Path, batch_size: int, window: int, windows: int, unmap: bool, seed: int) -> dict:
    examples = shards.ShardedExamples(folder, "train")
    sampler = examples.order(batch_size, seed=seed, window=window)
    per_window = sampler.window // sampler.global_batch
    file_mb = []
    for step, batch in enumerate(sampler):
        if not unmap:
            batch.window = None
        sum(int(e["input_ids"].sum()) + int(e["token_type_ids"].sum()) for e in examples.__getitems__(batch))
        if step % per_window == per_window - 1:
            file_mb.append(file_backed_mb())
        if step + 1 == windows * per_window:
            break
    return {"unmap_each_window": unmap, "file_backed_mb_at_each_window_end": file_mb, "peak_file_backed_mb": max(file_mb, default=None)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, type=Path, help="a `scratchbert dataset` folder")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--order-window", type=int, default=shards.DEFAULT_WINDOW, help="shuffle window of the order arms (pretraining's default)")
    p.add_argument("--memory-window", type=int, default=1 << 16, help="shuffle window of the memory arms")
    p.add_argument("--windows", type=int, default=8, help="windows read in each memory arm")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    sizes = shards.ShardedExamples(args.dataset, "train").sizes
    result = {
        "benchmark": "data_order", "dataset": str(args.dataset), "examples": sum(sizes), "shards": len(sizes),
        "order": {"blocks_of_1024": coverage(sizes, args.batch_size, args.order_window, shards.BLOCK, args.seed),
                  "whole_shards (before)": coverage(sizes, args.batch_size, args.order_window, WHOLE_SHARDS, args.seed)},
        # the kept arm second: its shards stay mapped, which would count against the other arm
        "memory": [memory(args.dataset, args.batch_size, args.memory_window, args.windows, unmap, args.seed)
                   for unmap in (True, False)],
    }
    emit(result)


if __name__ == "__main__":
    main()
