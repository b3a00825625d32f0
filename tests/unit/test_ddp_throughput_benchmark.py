"""The data-parallel benchmark's arms (``benchmarks/ddp_throughput.py``) train the same batch a step."""

import importlib
import sys
from pathlib import Path

import pytest


@pytest.fixture
def bench(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHBERT_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # scripts, not a package
    yield importlib.import_module("ddp_throughput")
    for name in ("ddp_throughput", "common"):  # the scripts import each other by these plain names
        sys.modules.pop(name, None)


@pytest.mark.parametrize("batch", ["33", "1"])
def test_a_batch_the_two_processes_cannot_split_evenly_is_refused(bench, monkeypatch, capsys, batch):
    # --batch-size 33 compared one process at 33 a step with two at 16 (32 a step), silently
    monkeypatch.setattr(sys, "argv", ["ddp_throughput.py", "--batch-size", batch])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 2
    assert f"--batch-size {batch} must be even" in capsys.readouterr().err
