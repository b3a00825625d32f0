"""SQuAD v1.1 exact match and F1, as an ``evaluate`` metric module shipped with scratchbert.

The scoring is the official SQuAD v1.1 evaluation script (``evaluate-v1.1.py``, Rajpurkar et
al. 2016), function for function: answers are normalised (lower case, punctuation removed,
the articles a/an/the removed, whitespace collapsed), F1 is computed over the bag of
normalised tokens, each question takes the best score over its ground truths, and both
numbers are averaged over the *references* on a 0-100 scale (a reference without a
prediction scores 0).

Why our own copy instead of ``evaluate.load("squad")``: the Hub's module is fetched from the
network on first use, and this project must score offline (tests, air-gapped clusters). The
inputs are the same as the Hub's ``squad`` metric, so the two are interchangeable.

Load it with ``evaluate.load("<path to this folder>")`` or ``scratchbert.metrics.squad_metric()``.
"""

import re
import string
import sys
from collections import Counter

import datasets
import evaluate

_CITATION = """\
@inproceedings{Rajpurkar2016SQuAD10,
  title={SQuAD: 100,000+ Questions for Machine Comprehension of Text},
  author={Pranav Rajpurkar and Jian Zhang and Konstantin Lopyrev and Percy Liang},
  booktitle={EMNLP},
  year={2016}
}
"""

_DESCRIPTION = """\
Exact match and F1 of the official SQuAD v1.1 evaluation script, on a 0-100 scale.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}, one answer per question.
    references: list of {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}.
Returns:
    exact_match: percentage of questions whose normalised prediction equals a normalised ground truth.
    f1: average over questions of the best token-overlap F1 against the ground truths.
Examples:
    >>> import scratchbert.metrics
    >>> squad = scratchbert.metrics.squad_metric()
    >>> squad.compute(
    ...     predictions=[{"id": "q1", "prediction_text": "the big red dog"}],
    ...     references=[{"id": "q1", "answers": {"text": ["red dog"], "answer_start": [0]}}],
    ... )
    {'exact_match': 0.0, 'f1': 80.0}
"""


# The four functions below follow the official v1.1 script exactly; do not "improve" them,
# the whole point is to give the same numbers as every published SQuAD v1.1 result.
def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def f1_score(prediction, ground_truth):
    """Token-overlap F1 between one prediction and one ground truth (0-1)."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction, ground_truth):
    """True when the two answers are equal after normalisation."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    """Best score of ``prediction`` against any of the ground truths."""
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV1(evaluate.Metric):
    """SQuAD v1.1 exact match and F1 (official script semantics, 0-100 scale)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": {
                            "text": datasets.List(datasets.Value("string")),
                            "answer_start": datasets.List(datasets.Value("int32")),
                        },
                    },
                }
            ),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        answers_by_id = {p["id"]: p["prediction_text"] for p in predictions}
        f1 = exact_match = total = 0
        for ref in references:
            total += 1
            if ref["id"] not in answers_by_id:
                print(f"Unanswered question {ref['id']} will receive score 0.", file=sys.stderr)
                continue
            ground_truths = list(ref["answers"]["text"])
            prediction = answers_by_id[ref["id"]]
            exact_match += metric_max_over_ground_truths(exact_match_score, prediction, ground_truths)
            f1 += metric_max_over_ground_truths(f1_score, prediction, ground_truths)
        if total == 0:
            return {"exact_match": 0.0, "f1": 0.0}
        return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}
