"""The data-order benchmark (``benchmarks/data_order.py``) on a dataset of many shards in corpus order."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchbert import shards


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # scripts, not a package
    yield importlib.import_module("data_order")
    for name in ("data_order", "common"):
        sys.modules.pop(name, None)


def test_blocks_reach_every_part_of_the_split_where_whole_shards_did_not(bench, tmp_path, monkeypatch, capsys):
    n = 200_000  # about 200 blocks in 4 shards
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    types = np.zeros(offsets[-1], np.int8)
    writer = shards.ShardWriter(tmp_path, "train", "part-00000", 8_000_000)
    writer.write(rng.integers(0, 30000, size=offsets[-1]).astype(np.int32), offsets, types,
                 rng.integers(0, 2, size=n).astype(np.int8))
    entries = writer.close()
    assert 3 <= len(entries) <= 5
    shards.write_index(tmp_path, {"tokenizer_fingerprint": "x", "max_seq_len": 64, "vocab_size": 30000,
                                  "splits": {"train": {"shards": entries, "examples": n}}})
    monkeypatch.setattr(sys, "argv", ["data_order.py", "--dataset", str(tmp_path), "--batch-size", "64",
                                      "--order-window", "4096", "--memory-window", "4096", "--windows", "3"])
    bench.main()
    result = json.loads(capsys.readouterr().out)
    blocks, whole = result["order"]["blocks_of_1024"], result["order"]["whole_shards (before)"]
    assert blocks["first_10%"]["tenths_reached"] >= 8 and blocks["first_50%"]["least_reached_tenth"] > 0.25
    assert whole["first_10%"]["tenths_reached"] <= 3 and whole["first_50%"]["least_reached_tenth"] == 0
    assert [len(m["file_backed_mb_at_each_window_end"]) for m in result["memory"]] == [3, 3]
    assert [m["unmap_each_window"] for m in result["memory"]] == [True, False]
