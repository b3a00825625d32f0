"""The post-processing benchmark's expected-F1 and expected-EM arms (``benchmarks/qa_postprocess.py``)."""

import importlib
import json
import sys
from pathlib import Path

import pytest


@pytest.fixture
def bench(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHBERT_SHARED_DATA", str(tmp_path / "no-shared-data"))  # as without ../shared/data
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # scripts, not a package
    yield importlib.import_module("qa_postprocess")
    for name in ("qa_postprocess", "common"):  # the scripts import each other by these plain names
        sys.modules.pop(name, None)


def test_expected_f1_prefers_the_answer_the_likely_ones_agree_on(bench):
    candidates = [{"text": "Metro-Goldwyn-Mayer", "logit": 2.0}, {"text": "Marcus Loew", "logit": 1.8},
                  {"text": "Loew", "logit": 1.6}, {"text": "Marcus Loew, who merged three film studios", "logit": 1.5}]
    assert bench._expected_f1_answer(candidates, temperature=1.0) == "Marcus Loew"  # not the single most likely
    # a cold posterior is all on the most likely answer: expected F1 then picks it
    assert bench._expected_f1_answer(candidates, temperature=0.01) == "Metro-Goldwyn-Mayer"


def test_expected_em_adds_up_the_spans_that_are_the_same_answer(bench):
    candidates = [{"text": "Metro-Goldwyn-Mayer", "score": 0.4}, {"text": "Marcus Loew", "score": 0.3},
                  {"text": "the Marcus Loew.", "score": 0.2}, {"text": "Loew", "score": 0.1}]
    # "the Marcus Loew." is "Marcus Loew" once normalised (0.3 + 0.2 > 0.4); the likeliest spelling is kept
    assert bench._expected_em_answer(candidates) == "Marcus Loew"
    assert bench._expected_em_answer(candidates[:2] + candidates[3:]) == "Metro-Goldwyn-Mayer"


def test_a_dev_set_of_ones_own_is_scored_without_the_shared_data(bench, monkeypatch, tmp_path, capsys):
    # it used to print {"skipped": ".../enwiki/train.txt not found"} and score nothing
    dev = tmp_path / "dev.json"
    dev.write_text('{"data": []}')
    swept = []
    monkeypatch.setattr(bench, "sweep", lambda model, squad_dev, *flags: swept.append((model, squad_dev)) or {"model": str(model)})
    monkeypatch.setattr(sys, "argv", ["qa_postprocess.py", str(tmp_path / "qa"), "--squad-dev", str(dev)])
    bench.main()
    assert swept == [(tmp_path / "qa", dev)]
    assert "skipped" not in json.loads(capsys.readouterr().out)
