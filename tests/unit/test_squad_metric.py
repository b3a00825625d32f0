"""The SQuAD v1.1 metric shipped in scratchbert gives the official script's numbers."""

from __future__ import annotations

import json
import os
import random
import re
import string
import subprocess
import sys
from collections import Counter

import pytest

from scratchbert.metrics import SQUAD_V1_DIR, squad_metric
from scratchbert_pipelines.local_run import stand_in_data

DEV = stand_in_data() / "squad" / "dev-v1.1.json"


@pytest.fixture(scope="module")
def metric():
    return squad_metric()


def score(metric, pairs: list[tuple[str, list[str]]]) -> dict:
    preds = [{"id": str(i), "prediction_text": p} for i, (p, _) in enumerate(pairs)]
    refs = [{"id": str(i), "answers": {"text": t, "answer_start": [0] * len(t)}} for i, (_, t) in enumerate(pairs)]
    return metric.compute(predictions=preds, references=refs)


@pytest.mark.parametrize(
    "prediction, truths, em, f1",
    [
        # normalisation: case, punctuation, articles, whitespace
        ("The  Denver Broncos!", ["denver broncos"], 100.0, 100.0),
        # "the big red dog" -> "big red dog": 2 of 3 predicted tokens right (P = 2/3), both truth
        # tokens found (R = 1): F1 = 2 * (2/3) * 1 / (2/3 + 1) = 0.8
        ("the big red dog", ["red dog"], 0.0, 80.0),
        # repeated tokens count once per match: P = 1/3, R = 1 -> F1 = 0.5
        ("dog dog dog", ["dog"], 0.0, 50.0),
        # P = 1/2, R = 1/3 -> F1 = 2 * (1/6) / (5/6) = 0.4
        ("red cat", ["red dog sled"], 0.0, 40.0),
        # several ground truths: the best one counts ("a red dog" normalises to "red dog")
        ("red dog", ["blue cat", "a red dog", "dog"], 100.0, 100.0),
        # vs "red dog": P = 2/3, R = 1 -> 0.8; vs "big dog sled": P = R = 2/3 -> 2/3; max = 0.8
        ("big red dog", ["big dog sled", "red dog"], 0.0, 80.0),
        # an empty prediction scores nothing
        ("", ["red dog"], 0.0, 0.0),
        # the official script's quirk: both sides normalise to "" -> exact match, but F1 0
        ("the", ["a"], 100.0, 0.0),
        ("1,000 people.", ["1000 people"], 100.0, 100.0),
    ],
)
def test_known_values(metric, prediction, truths, em, f1):
    result = score(metric, [(prediction, truths)])
    assert result["exact_match"] == pytest.approx(em, abs=1e-9)
    assert result["f1"] == pytest.approx(f1, abs=1e-9)


def test_average_over_questions_and_unanswered_questions_score_zero(metric):
    result = score(metric, [("the big red dog", ["red dog"]), ("dog dog dog", ["dog"]), ("Paris", ["paris"])])
    assert result["f1"] == pytest.approx((80 + 50 + 100) / 3, abs=1e-9)
    assert result["exact_match"] == pytest.approx(100 / 3, abs=1e-9)
    # the official script divides by the number of questions, answered or not
    refs = [{"id": i, "answers": {"text": ["x"], "answer_start": [0]}} for i in ("a", "b")]
    preds = [{"id": "a", "prediction_text": "x"}, {"id": "zzz", "prediction_text": "x"}]
    assert metric.compute(predictions=preds, references=refs) == {"exact_match": 50.0, "f1": 50.0}


# ---- an independent, straight re-implementation of the official evaluate-v1.1.py ----

def _official_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_f1(prediction, ground_truth):
    p = _official_normalize_answer(prediction).split()
    g = _official_normalize_answer(ground_truth).split()
    num_same = sum((Counter(p) & Counter(g)).values())
    if num_same == 0:
        return 0
    precision, recall = num_same / len(p), num_same / len(g)
    return 2 * precision * recall / (precision + recall)


def _official_em(prediction, ground_truth):
    return _official_normalize_answer(prediction) == _official_normalize_answer(ground_truth)


def _official_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                truths = [a["text"] for a in qa["answers"]]
                exact_match += max(_official_em(predictions[qa["id"]], t) for t in truths)
                f1 += max(_official_f1(predictions[qa["id"]], t) for t in truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


@pytest.mark.shared_data
@pytest.mark.skipif(not DEV.is_file(), reason=f"{DEV} not present")
def test_matches_official_script_on_squad_dev(metric):
    data = json.loads(DEV.read_text(encoding="utf-8"))["data"]
    rng = random.Random(1234)
    pool = [(a["title"], p["context"], qa) for a in data for p in a["paragraphs"] for qa in p["qas"]]
    chosen = rng.sample(pool, 400)
    predictions = {}
    for title, context, qa in chosen:
        gold = qa["answers"][0]
        kind = rng.randrange(5)
        if kind == 0:  # exact answer, maybe re-cased or with punctuation
            pred = rng.choice([gold["text"], gold["text"].upper(), gold["text"] + ".", "The " + gold["text"]])
        elif kind in (1, 2):  # a span of the context overlapping the answer, a few characters off
            s = max(0, gold["answer_start"] + rng.randint(-25, 10))
            e = min(len(context), gold["answer_start"] + len(gold["text"]) + rng.randint(-10, 25))
            pred = context[s:max(s, e)]
        elif kind == 3:  # some other question's answer
            pred = rng.choice(pool)[2]["answers"][0]["text"]
        else:
            pred = rng.choice(["", "the", title])
        predictions[qa["id"]] = pred
    expected = _official_evaluate([{"paragraphs": [{"qas": [qa for _, _, qa in chosen]}]}], predictions)
    got = metric.compute(
        predictions=[{"id": qid, "prediction_text": p} for qid, p in predictions.items()],
        references=[{"id": qa["id"], "answers": {"text": [a["text"] for a in qa["answers"]],
                                                 "answer_start": [a["answer_start"] for a in qa["answers"]]}}
                    for _, _, qa in chosen],
    )
    # a sanity check that the sample exercises partial credit, not just 0 and 100
    assert 5 < expected["f1"] - expected["exact_match"]
    assert got["exact_match"] == pytest.approx(expected["exact_match"], abs=1e-9)
    assert got["f1"] == pytest.approx(expected["f1"], abs=1e-9)


def test_loads_from_the_package_folder_without_network(tmp_path):
    """evaluate.load on our folder works offline, with a dead Hub endpoint and an empty cache."""
    assert (SQUAD_V1_DIR / "squad_v1.py").is_file()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    code = (
        "from scratchbert.metrics import squad_metric\n"
        "m = squad_metric()\n"
        "print(m.name, m.compute(predictions=[{'id': '1', 'prediction_text': 'the big red dog'}],"
        " references=[{'id': '1', 'answers': {'text': ['red dog'], 'answer_start': [0]}}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'exact_match': 0.0, 'f1': 80.0" in proc.stdout
