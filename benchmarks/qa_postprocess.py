"""SQuAD EM/F1 of fine-tuned QA models against the longest answer allowed and answers in whole
words or in tokens, without retraining.

    python benchmarks/qa_postprocess.py MODEL_DIR [MODEL_DIR ...] [--squad-dev FILE] [--expected-f1] [--expected-em]

Each model predicts the dev windows once; each max_answer_len, with answers widened to whole
words or cut at token edges, then turns the same logits into answers. Dev is split by article:
the first half of the articles chooses a setting, the second half checks it (questions of one
article are alike).
Prints one JSON document: per model and setting, EM/F1 on each half and on all questions, and
the mean words per answer; the library's defaults are marked ``"current": true``.

``--expected-f1`` adds rows that pick, among each question's n-best answers, the one of highest
expected F1 against the others weighted by their softmax probability at a temperature (minimum
Bayes risk for F1) instead of the most likely answer. ``--expected-em`` adds the row for exact
match: the answer text whose n-best spans (the same words anywhere in the context) have the most
probability in all. Both tried and left out (docs/performance.md).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from common import SQUAD_DEV, emit, require_shared_data

MAX_ANSWER_LENS = (30, 20, 15, 10, 5)


EXPECTED_F1 = ((1.0, 20), (1.0, 5), (0.5, 20), (2.0, 20))  # (temperature, candidates)


def sweep(model_dir: Path, squad_dev: Path, expected_f1: bool = False, expected_em: bool = False) -> dict:
    from scratchbert import qa

    windows = qa.predict_windows(model_dir, str(squad_dev), batch_size=64)
    eval_set = windows.eval_set
    titles = list(dict.fromkeys(eval_set["title"]))
    choose = set(titles[: len(titles) // 2])
    refs = eval_set.to_list()
    halves = {"choose": [r for r in refs if r["title"] in choose], "check": [r for r in refs if r["title"] not in choose],
              "all": refs}
    rows = []
    for align_to_words in (True, False):
        for max_answer_len in MAX_ANSWER_LENS:
            rows.append(_row(qa, windows, halves, max_answer_len, align_to_words))
    choices = []  # (what the row says, the answer chosen from a question's n-best)
    if expected_f1:
        choices += [({"expected_f1": {"temperature": t, "candidates": k}},
                     lambda cands, t=t, k=k: _expected_f1_answer(cands[:k], t)) for t, k in EXPECTED_F1]
    if expected_em:
        choices.append(({"expected_em": True}, _expected_em_answer))
    if choices:
        _, nbest = qa.postprocess_predictions(windows.eval_set, windows.features, windows.start_logits,
                                              windows.end_logits)
    for label, choose in choices:
        predictions = {qid: choose(cands) for qid, cands in nbest.items()}
        rows.append(_scored({"max_answer_len": qa.MAX_ANSWER_LEN, "align_to_words": True, "current": False, **label},
                            qa, predictions, halves))
    best = max(rows, key=lambda r: r["choose_f1"])
    chosen = ("max_answer_len", "align_to_words", "expected_f1", "expected_em", "check_em", "check_f1")
    return {"model": str(model_dir), "questions": {k: len(v) for k, v in halves.items()}, "rows": rows,
            "chosen_on_first_half": {k: best.get(k) for k in chosen}}


def _row(qa, windows, halves: dict, max_answer_len: int, align_to_words: bool) -> dict:
    predictions, _ = qa.postprocess_predictions(windows.eval_set, windows.features, windows.start_logits,
                                                windows.end_logits, max_answer_len=max_answer_len,
                                                align_to_words=align_to_words)
    return _scored({"max_answer_len": max_answer_len, "align_to_words": align_to_words,
                    "current": max_answer_len == qa.MAX_ANSWER_LEN and align_to_words}, qa, predictions, halves)


def _scored(row: dict, qa, predictions: dict, halves: dict) -> dict:
    row["mean_words"] = round(float(np.mean([len(p.split()) for p in predictions.values()])), 2)
    for name, half in halves.items():
        scores = qa.squad_scores(predictions, half)
        row[f"{name}_em"], row[f"{name}_f1"] = round(scores["exact_match"], 2), round(scores["f1"], 2)
    return row


def _expected_f1_answer(candidates: list[dict], temperature: float) -> str:
    """The candidate of highest expected F1 against all candidates, weighted by their probability."""
    from scratchbert.metrics.squad_v1.squad_v1 import normalize_answer

    words = [Counter(normalize_answer(c["text"]).split()) for c in candidates]
    logits = np.array([c["logit"] for c in candidates]) / temperature
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()

    # the official f1_score on word counts normalised once per candidate: it would normalise both
    # texts again for each of the 400 pairs of every question
    def f1(a: Counter, b: Counter) -> float:
        same = sum((a & b).values())
        return 0.0 if same == 0 else 2 * same / (sum(a.values()) + sum(b.values()))

    gains = [sum(p * f1(w, other) for p, other in zip(probs, words)) for w in words]
    return candidates[int(np.argmax(gains))]["text"]


def _expected_em_answer(candidates: list[dict]) -> str:
    """The candidate text of most probability, summed over candidates that are the same words."""
    from scratchbert.metrics.squad_v1.squad_v1 import normalize_answer

    mass: Counter = Counter()
    spelling: dict[str, str] = {}
    for c in candidates:  # best first, so a text keeps the spelling of its likeliest span
        key = normalize_answer(c["text"])
        mass[key] += c["score"]
        spelling.setdefault(key, c["text"])
    return spelling[mass.most_common(1)[0][0]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="fine-tuned QA model folders (qa-finetune's out)")
    p.add_argument("--squad-dev", default=str(SQUAD_DEV))
    p.add_argument("--expected-f1", action="store_true", help="also pick answers by expected F1 over the n-best")
    p.add_argument("--expected-em", action="store_true",
                   help="also pick the answer text of most probability over the n-best (expected exact match)")
    args = p.parse_args()
    if args.squad_dev == str(SQUAD_DEV):  # a dev set of one's own needs nothing of ../shared/data
        require_shared_data()
    emit({"benchmark": "qa_postprocess",
          "models": [sweep(Path(m), Path(args.squad_dev), args.expected_f1, args.expected_em) for m in args.models]})


if __name__ == "__main__":
    main()
