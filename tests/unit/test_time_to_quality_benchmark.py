"""The time-to-quality benchmark's ``--pretrain-flags`` (``benchmarks/time_to_quality.py``)."""

import importlib
import sys
from pathlib import Path

import pytest


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # scripts, not a package
    yield importlib.import_module("time_to_quality")
    for name in ("time_to_quality", "common"):  # the scripts import each other by these plain names
        sys.modules.pop(name, None)


def test_pretrain_flags_change_the_scratchbert_recipe(bench):
    assert bench.overrides("--batch-size 16 --warmup-fraction 0.12") == {"batch_size": 16, "warmup_fraction": 0.12}


@pytest.mark.parametrize("flag", ["--time-budget-minutes 3", "--eval-steps 100", "--save-steps 50", "--logging-steps 10"])
def test_pretrain_flags_that_the_benchmark_sets_for_both_recipes_are_refused(bench, flag):
    # they used to reach PretrainConfig twice: a TypeError after minutes of data preparation
    with pytest.raises(ValueError, match=f"cannot set {flag.split()[0]}"):
        bench.overrides(flag)
