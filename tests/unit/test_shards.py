"""scratchbert.shards: shard files of bounded size, the memory-mapped reader, and the training order
(every example once per epoch, deterministic per seed and epoch, length-grouped, split over ranks)."""

from __future__ import annotations

import numpy as np
import pytest

from scratchbert import shards
from scratchbert.errors import ScratchBertError


def _examples(n: int, seed: int = 0):
    """n random examples as the flat arrays ShardWriter takes, and the same as a list of dicts."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 60, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(0, 30000, size=offsets[-1]).astype(np.int32)
    a = rng.integers(2, lengths - 2)
    types = np.concatenate([(np.arange(m) >= k).astype(np.int8) for m, k in zip(lengths, a)])
    labels = rng.integers(0, 2, size=n).astype(np.int8)
    rows = [{"input_ids": ids[offsets[i]:offsets[i + 1]].tolist(), "token_type_ids": types[offsets[i]:offsets[i + 1]].tolist(),
             "next_sentence_label": int(labels[i]), "length": int(lengths[i])} for i in range(n)]
    return (ids, offsets, types, labels), rows


def _write(folder, blocks, shard_bytes):
    writer = shards.ShardWriter(folder, "train", "part-00000", shard_bytes)
    for block in blocks:
        writer.write(*block)
    entries = writer.close()
    shards.write_index(folder, {"tokenizer_fingerprint": "x", "max_seq_len": 64, "vocab_size": 30000,
                                "splits": {"train": {"shards": entries, "examples": sum(e["examples"] for e in entries)}}})
    return entries


def test_shards_stay_under_their_size_and_hold_every_example_in_order(tmp_path):
    blocks, rows = zip(*(_examples(n, seed) for seed, n in enumerate([700, 5, 1300, 1])))
    rows = [r for block in rows for r in block]
    entries = _write(tmp_path, blocks, shard_bytes=20_000)
    assert len(entries) > 5
    biggest_example = max(len(r["input_ids"]) for r in rows) * 5 + 11
    for e in entries:
        assert e["bytes"] == (tmp_path / e["file"]).stat().st_size
        assert e["bytes"] <= 20_000 + biggest_example, e
    assert sum(e["examples"] for e in entries) == len(rows)
    assert sum(e["tokens"] for e in entries) == sum(len(r["input_ids"]) for r in rows)
    # read back, across every boundary: by the datasets view and by the training reader
    assert shards.load_split(tmp_path, "train").to_list() == rows
    examples = shards.ShardedExamples(tmp_path, "train", max_open=2)
    assert len(examples) == len(rows)
    for i in [0, 1, *np.cumsum([e["examples"] for e in entries])[:-1] - 1, *np.cumsum([e["examples"] for e in entries])[:-1],
              len(rows) - 1]:
        got = examples[int(i)]
        assert got["input_ids"].tolist() == rows[i]["input_ids"] and got["token_type_ids"].tolist() == rows[i]["token_type_ids"]
        assert got["next_sentence_label"] == rows[i]["next_sentence_label"]
    assert len(examples._open) <= 2  # only the shards in use stay mapped
    assert np.concatenate([examples.lengths(s) for s in range(len(entries))]).tolist() == [r["length"] for r in rows]


def test_a_dataset_replaced_while_a_run_reads_it_stops_the_run_in_one_line(tmp_path):
    """A rerun of `scratchbert dataset` into the folder a pretraining run reads put new shards under
    the old names: the run's reader opened them under its old index (an internal IndexError, or
    examples of another dataset, silently). Now the first shard opened after it says so."""
    from scratchbert.outputs import _swap_into_place

    folder, new = tmp_path / "data", tmp_path / "new"
    entries = _write(folder, [_examples(700, 0)[0]], shard_bytes=20_000)
    assert len(entries) > 2
    examples = shards.ShardedExamples(folder, "train", max_open=1)
    first = examples[0]["input_ids"].tolist()
    _write(new, [_examples(500, 1)[0]], shard_bytes=10_000)  # another dataset, put in place as a stage does
    _swap_into_place(new, folder)
    assert examples[0]["input_ids"].tolist() == first  # a shard mapped already reads as before
    with pytest.raises(ScratchBertError, match=f"dataset {folder} was replaced while this run read it"):
        examples[len(examples) - 1]


def test_one_example_larger_than_a_shard_gets_a_shard_of_its_own(tmp_path):
    (block, rows) = _examples(3)
    entries = _write(tmp_path, [block], shard_bytes=1024)
    assert [e["examples"] for e in entries] == [1, 1, 1]
    assert shards.load_split(tmp_path, "train").to_list() == rows


def test_a_folder_of_another_format_or_a_part_is_refused(tmp_path):
    (tmp_path / shards.INDEX).write_text('{"max_seq_len": 64}')
    with pytest.raises(ScratchBertError, match="older scratchbert"):
        shards.read_index(tmp_path)
    _write(tmp_path, [_examples(4)[0]], 1 << 20)
    index = shards.read_index(tmp_path)
    shards.write_index(tmp_path, {**index, "part": {"index": 1, "count": 3}})
    with pytest.raises(ScratchBertError, match="part 1 of 3 of a dataset; merge the parts"):
        shards.read_index(tmp_path)


# --- the training order ------------------------------------------------------------------------

SIZES = [300, 1, 0, 257, 64, 500]


def _lengths(seed: int = 1):
    rng = np.random.default_rng(seed)
    per_shard = [rng.integers(10, 129, size=n) for n in SIZES]
    return lambda s, start, stop: per_shard[s][start:stop]


def _index_lengths(sizes):
    """Lengths that name their example (global index mod 30000 + 1): a length passed for the
    wrong example shows in the grouping."""
    offsets = np.cumsum([0, *sizes])
    return lambda s, start, stop: (np.arange(offsets[s] + start, offsets[s] + stop) % 30000 + 1).astype(np.int16)


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("window", [64, 256, shards.DEFAULT_WINDOW])
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("block", [shards.BLOCK, 50, 7])  # one block a shard; several, short last ones, cut by windows
def test_every_example_once_per_epoch_and_the_order_is_a_function_of_seed_and_epoch(window, grouped, block):
    def make(seed):
        return shards.ShardBatchSampler(SIZES, 32, seed=seed, window=window, lengths=_lengths() if grouped else None,
                                        block=block)

    sampler = make(7)
    n = sum(SIZES)
    assert len(sampler) == -(-n // 32)
    first = _epoch(sampler, 0)
    assert len(first) == len(sampler) and all(len(b) == 32 for b in first[:-1])
    assert sorted(i for b in first for i in b) == list(range(n))
    assert _epoch(make(7), 0) == first  # a new process with the same seed: the same order
    assert _epoch(sampler, 1) != first and _epoch(sampler, 0) == first  # each epoch its own order
    assert _epoch(make(8), 0) != first


def test_every_window_draws_its_blocks_from_the_whole_split():
    """A window holds blocks from all over the split, not the few shards in a row the old
    order read: a corpus laid out in order (topics, sources, a group's dupes side by side) is
    mixed from the first step, and a run that stops short of an epoch has seen all of it."""
    sizes = [1000] * 10
    sampler = shards.ShardBatchSampler(sizes, 10, seed=3, window=480, block=50)
    batches = list(sampler)
    windows = [np.concatenate(batches[k:k + 48]) for k in range(0, len(batches), 48)]
    assert [len(w) for w in windows] == [480] * 20 + [400]
    touched = [len(set(w // 1000)) for w in windows]  # in the old order 1, or 2 at a seam
    assert min(touched) >= 4 and np.mean(touched) >= 6, touched  # 10 blocks of 10 shards
    for w in windows:
        assert np.ptp(w) > 5000  # spread over more than half the split
        assert list(w) != sorted(w)  # shuffled inside
    # a block is read together: its examples lie in one window, or two where a window's edge
    # cuts it: of the 20 edges at multiples of 480, those at multiples of 2,400 fall between blocks
    window_of = np.empty(sum(sizes), int)
    for k, w in enumerate(windows):
        window_of[w] = k
    spans = [len(set(window_of[a:a + 50])) for a in range(0, sum(sizes), 50)]
    assert max(spans) == 2 and spans.count(2) == 16
    # the first tenth of an epoch already reaches every shard (the old order: one shard)
    assert set(np.concatenate(batches[:100]) // 1000) == set(range(10))


@pytest.mark.parametrize("block", [shards.BLOCK, 50, 7])
def test_each_example_is_grouped_by_its_own_length(block):
    """The lengths read for a window's blocks line up with their examples: sorted within each
    pool of batches, longest first, by lengths that name their example."""
    sampler = shards.ShardBatchSampler(SIZES, 16, seed=4, window=128, lengths=_index_lengths(SIZES), block=block)
    batches = list(sampler)
    named = [[i % 30000 + 1 for i in b] for b in batches]
    assert named[0][0] == max(n for b in named[:8] for n in b)  # the first window's longest leads
    full = len(batches) // 8 * 8
    assert full >= 48
    for a in range(8, full, 2):  # the later whole windows of 128 = 8 batches: pools of 2 batches (128 // 64)
        pool = named[a] + named[a + 1]
        assert pool == sorted(pool, reverse=True), a


def test_length_grouping_pads_less_and_leads_with_the_longest_example():
    lengths = _lengths()
    all_lengths = np.concatenate([lengths(s, 0, None) for s in range(len(SIZES))])

    def padded(sampler):
        return sum(len(b) * int(all_lengths[b].max()) for b in sampler)

    grouped = shards.ShardBatchSampler(SIZES, 16, seed=0, lengths=lengths)
    plain = shards.ShardBatchSampler(SIZES, 16, seed=0)
    assert padded(grouped) < 0.8 * padded(plain)
    first = next(iter(grouped))
    assert all_lengths[first[0]] == all_lengths.max()


@pytest.mark.parametrize("block", [shards.BLOCK, 7])
@pytest.mark.parametrize("sizes, batch, world, last", [
    (SIZES, 16, 3, [6, 6, 6]),  # 1122 = 23 x 48 + 18: a smaller last step
    (SIZES, 16, 2, [1, 1]),  # 1122 = 35 x 32 + 2: one example each
    ([50, 51], 10, 3, [4, 4, 3]),  # 101 = 3 x 30 + 11: uneven by one
    ([31], 10, 3, [11, 10, 10]),  # 31 = 30 + 1: one example cannot go to 3 ranks, the step before takes it
    ([62], 10, 3, [11, 11, 10]),  # 62 = 2 x 30 + 2
    ([60], 10, 3, [10, 10, 10]),  # even
])
def test_ranks_see_every_example_once_per_epoch_in_steps_of_the_job_batch(sizes, batch, world, last, block):
    """Rank r's batches over two epochs: together, every example exactly once per epoch; the same
    number of steps on every rank; each step is a global batch of the single-process order with
    the job's batch size (batch x world), dealt out."""
    lengths = [np.random.default_rng(s).integers(10, 129, size=n) for s, n in enumerate(sizes)]
    n = sum(sizes)

    def sampler(rank, size, batch_size):
        return shards.ShardBatchSampler(sizes, batch_size, seed=5, window=64, rank=rank, world_size=size,
                                        lengths=lambda s, start, stop: lengths[s][start:stop], block=block)

    ranks = [sampler(r, world, batch) for r in range(world)]
    single = sampler(0, 1, batch * world)
    for epoch in (0, 1):
        per_rank = [_epoch(s, epoch) for s in ranks]
        steps = len(ranks[0])
        assert [len(b) for b in per_rank] == [steps] * world  # DDP: the same number of steps everywhere
        assert sorted(i for b in per_rank for batch_ in b for i in batch_) == list(range(n))  # each once
        assert [len(b[-1]) for b in per_rank] == last
        assert all(len(b) == batch for r in per_rank for b in r[:-1])
        job = _epoch(single, epoch)
        for step in range(steps):
            union = sorted(i for r in per_rank for i in r[step])
            assert union == sorted(job[step] if step < steps - 1 else [i for b in job[step:] for i in b])
    assert _epoch(ranks[0], 0) != _epoch(ranks[0], 1)


def test_a_rank_outside_the_world_or_more_ranks_than_examples_is_refused():
    with pytest.raises(ScratchBertError, match="rank 3 must lie"):
        shards.ShardBatchSampler(SIZES, 16, rank=3, world_size=3)
    with pytest.raises(ScratchBertError, match="the training split has 2 examples, fewer than the 3 training processes"):
        shards.ShardBatchSampler([2], 4, rank=0, world_size=3)


def test_a_batch_is_masked_from_its_own_seed_whenever_it_is_read(built_dataset):
    """Each batch of the order carries a seed of its own (run seed, epoch, step, rank), which
    the examples read for it keep: masked twice, with other draws from the process's random
    numbers in between (a DataLoader reading ahead), it gets the same masks."""
    import torch

    from scratchbert.pretraining_data import MlmNspCollator
    from scratchbert.tokenizer import load_tokenizer

    examples = shards.ShardedExamples(built_dataset)
    order = [list(shards.ShardBatchSampler(examples.sizes, 8, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    seeds = {b.mask_seed for r in order for b in r}
    assert len(seeds) == 2 * len(order[0])  # none shared by two steps or two ranks
    again = shards.ShardBatchSampler(examples.sizes, 8, seed=1, rank=0, world_size=2)
    assert [b.mask_seed for b in again] == [b.mask_seed for b in order[0]]
    collate = MlmNspCollator(load_tokenizer(built_dataset / "tokenizer"))
    batch = examples.__getitems__(order[0][3])
    assert batch.mask_seed == order[0][3].mask_seed
    first = collate(batch)
    torch.rand(1000)
    second = collate(batch)
    assert torch.equal(first["labels"], second["labels"]) and torch.equal(first["input_ids"], second["input_ids"])
    plain = [collate(list(batch))["labels"] for _ in range(2)]  # no seed: the process's random numbers
    assert not torch.equal(*plain)


def test_the_trainer_dataloader_leaves_the_dealing_to_the_sampler():
    """Under torchrun, accelerate would deal batches of the already rank-aware sampler a second time."""
    from types import SimpleNamespace

    from accelerate.data_loader import BatchSamplerShard

    def trainer(process_index, world_size):
        def prepare(loader):
            return SimpleNamespace(batch_sampler=BatchSamplerShard(loader.batch_sampler, num_processes=world_size,
                                                                   process_index=process_index))

        args = SimpleNamespace(dataloader_num_workers=0, dataloader_pin_memory=False, dataloader_persistent_workers=False,
                               dataloader_prefetch_factor=None, process_index=process_index, world_size=world_size)
        return SimpleNamespace(args=args, data_collator=list, accelerator=SimpleNamespace(prepare=prepare))

    sampler = shards.ShardBatchSampler(SIZES, 16, seed=5, rank=1, world_size=2)
    loader = shards.trainer_dataloader(trainer(1, 2), list(range(sum(SIZES))), sampler)
    assert list(loader.batch_sampler) == list(sampler)  # passed through, not dealt again
    with pytest.raises(ScratchBertError, match="the training order is for rank 1 of 2, but this is process 0 of 2"):
        shards.trainer_dataloader(trainer(0, 2), list(range(sum(SIZES))), sampler)


def test_the_open_shard_limit_covers_any_window():
    assert shards.shards_per_window([100, 100, 100], 150) == 3  # two shards hold 150 examples; one more at a seam
    assert shards.shards_per_window([1000, 10, 10, 0], 15) == 3
    assert shards.shards_per_window([5, 5], 1000) == 2  # never more than the shards there are
    assert shards.shards_per_window([1000] * 10, 500, block=50) == 10  # ten blocks: ten shards at most
    assert shards.shards_per_window([1000] * 40, 500, block=50) == 11  # ... and a seam
    assert shards.shards_per_window([1003] * 40, 480, block=50) == 40  # 40 last blocks of 3 fit in any window
    assert shards.shards_per_window([1003] * 40, 96, block=50) == 33  # 32 blocks of 3 hold 96; one more at a seam
    # and it holds: no window of such an order touches more; where every block is short, some touch that many
    for sizes, window in (([1003] * 40, 96), ([1000] * 40, 480), ([1003] * 6 + [1000] * 34, 480), ([5] * 40, 96)):
        bound = shards.shards_per_window(sizes, window, block=50)
        most = 0
        for seed in range(8):
            batches = list(shards.ShardBatchSampler(sizes, 16, seed=seed, window=window, block=50))
            per_window = window // 16
            most = max(most, *(len(set(np.searchsorted(np.cumsum(sizes), np.concatenate(batches[k:k + per_window]),
                                                       side="right")))
                               for k in range(0, len(batches), per_window)))
        assert most <= bound, (sizes, window, most, bound)
    assert (most, bound) == (20, 21)  # blocks of 5 in windows of 96: 20 pieces at most; the bound within one


def test_the_reader_unmaps_the_last_windows_shards_when_a_new_window_starts(tmp_path):
    """A window's blocks lie all over the split, so shards kept open from window to window
    would map the whole split over an epoch: the reader closes them when the order moves on."""
    entries = _write(tmp_path, [_examples(2000, 0)[0]], shard_bytes=20_000)
    assert len(entries) >= 6
    examples = shards.ShardedExamples(tmp_path, "train", max_open=len(entries) + 1)
    sampler = shards.ShardBatchSampler(examples.sizes, 16, seed=2, window=64, block=8)
    batches = list(sampler)
    assert [b.window for b in batches[:5]] == [(0, 0)] * 4 + [(0, 1)]
    open_after = []
    for b in batches[:8]:
        examples.__getitems__(b)
        open_after.append(set(examples._open))
    shards_of = [{examples.locate(i)[0] for i in b} for b in batches[:8]]
    assert open_after[3] == set().union(*shards_of[:4])  # a window's shards stay open while it lasts
    assert open_after[4] == shards_of[4]  # ... and the next window's first batch has only its own
    assert open_after[7] == set().union(*shards_of[4:8])


def test_data_position_is_checked_on_resume(tmp_path):
    sampler = shards.ShardBatchSampler(SIZES, 16, seed=5)
    position = shards.data_position(sampler, "abc", batches_done=len(sampler) + 3)
    assert position["epoch"] == 1 and position["batch_in_epoch"] == 3
    assert position["examples"] == sum(SIZES) + 3 * 16  # an epoch, then 3 batches
    from scratchbert.outputs import write_json

    write_json(tmp_path / shards.DATA_POSITION, position)
    assert shards.check_data_position(tmp_path, sampler, "abc") == position
    with pytest.raises(ScratchBertError, match=r"another data order \(batch_size changed\)"):
        shards.check_data_position(tmp_path, shards.ShardBatchSampler(SIZES, 8, seed=5), "abc")
    with pytest.raises(ScratchBertError, match=r"another data order \(block changed\)"):
        shards.check_data_position(tmp_path, shards.ShardBatchSampler(SIZES, 16, seed=5, block=64), "abc")
    with pytest.raises(ScratchBertError, match=r"another data order \(dataset changed\)"):
        shards.check_data_position(tmp_path, sampler, "another")
    assert shards.check_data_position(tmp_path / "nothing", sampler, "abc") is None
    del position["order"]["block"]  # a checkpoint of the order before blocks
    write_json(tmp_path / shards.DATA_POSITION, position)
    with pytest.raises(ScratchBertError, match="order of an earlier scratchbert .* start afresh with another --checkpoint-dir"):
        shards.check_data_position(tmp_path, sampler, "abc")
