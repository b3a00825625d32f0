"""SQuAD quality against the whole run's time budget: the main job with ``--budget-minutes N``.

    python benchmarks/qa_budget.py --minutes 15 [30 60 120] [--shares 0.4 0.6] [--preset mini] [--corpus FILE] [--workdir DIR]

For each budget, one ``scratchbert run-local --budget-minutes N`` (the offline stand-ins in
../shared/data: enwiki, its first 11 MB below 30 minutes and 64 MB from 30, and SQuAD v1.1), its
QA model then scored on all 10,570 dev questions outside the budget (``scratchbert qa-score``: the
run scores its first 1,000, as a user's does, so it splits its budget as theirs) and asked a few
plain questions; with ``--shares``, one run per budget and ``--budget-pretrain-share`` (the recipe's
share otherwise); with ``--corpus``, that text whole instead. Prints one JSON document: per
budget, each stage's time, MLM/NSP accuracy, EM/F1 (the run's and on all questions) and the answers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SQUAD_DEV, emit, require_shared_data

# Plain questions a reader answers at once: (context, question, expected answer).
QUESTIONS = [
    ("Metro-Goldwyn-Mayer was founded in 1924 by Marcus Loew, who merged three film studios.",
     "Who founded the company?", "Marcus Loew"),
    ("The Eiffel Tower was completed in 1889 and stands on the Champ de Mars in Paris.",
     "When was the Eiffel Tower completed?", "1889"),
    ("Marie Curie was born in Warsaw in 1867. She later moved to Paris, where she studied physics.",
     "Where was Marie Curie born?", "Warsaw"),
    ("The Nile flows north through eleven countries and empties into the Mediterranean Sea.",
     "Where does the Nile empty?", "the Mediterranean Sea"),
]


def run(minutes: float, preset: str | None, workdir: Path, share: float | None = None, corpus: str | None = None) -> dict:
    cmd = [str(Path(sys.executable).parent / "scratchbert"), "run-local", "--budget-minutes", str(minutes),
           "--workdir", str(workdir), "-q"]
    options = {"--preset": preset, "--budget-pretrain-share": share, "--corpus": corpus,  # left to the recipe when None
               "--max-corpus-bytes": 0 if corpus else None}  # a corpus given whole, not cut to the budget's text
    cmd += [arg for flag, value in options.items() if value is not None for arg in (flag, str(value))]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    wall = time.perf_counter() - t0
    (summary_file,) = sorted(workdir.glob("*/summary.json"))[-1:]
    summary = json.loads(summary_file.read_text())
    stages = summary["stages"]
    scores = score_all(summary, workdir)
    return {"minutes": minutes, "preset": preset, "share": share, "corpus": corpus, "command": " ".join(cmd[1:]), "wall_seconds": round(wall, 1),
            "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
            "pretrain_steps": stages.get("pretrain", {}).get("steps"),
            "pretrain_seconds": stages.get("pretrain", {}).get("train_seconds"),
            "pretrain_reserved_seconds": stages.get("pretrain", {}).get("reserved_seconds"),  # a paced split's
            "qa_steps": stages.get("qa_finetune", {}).get("train_steps"),
            "qa_seconds": stages.get("qa_finetune", {}).get("train_seconds"),
            "mlm_accuracy": stages.get("evaluate", {}).get("mlm_accuracy"),
            "nsp_accuracy": stages.get("evaluate", {}).get("nsp_accuracy"),
            "run_exact_match": stages.get("qa_finetune", {}).get("exact_match"),
            "run_f1": stages.get("qa_finetune", {}).get("f1"),
            "run_eval_questions": stages.get("qa_finetune", {}).get("eval_examples"),
            "exact_match": scores["exact_match"], "f1": scores["f1"], "eval_questions": scores["eval_examples"],
            "answers": ask(summary)}


def score_all(summary: dict, workdir: Path) -> dict:
    """EM/F1 of the run's QA model on every question of SQuAD v1.1 dev (``scratchbert qa-score``)."""
    from scratchbert.qa import QAScoreConfig, score_qa

    out = workdir / f"{summary['run_id']}-score-all"
    return score_qa(QAScoreConfig(model=summary["qa_model"], squad_dev=str(SQUAD_DEV), out=str(out), max_eval_examples=0))


def ask(summary: dict) -> list[dict]:
    """The published model's answers to :data:`QUESTIONS` (fetched from the kept store)."""
    from scratchbert import storage
    from scratchbert.objectstore import EmbeddedS3
    from scratchbert.qa import answer

    with tempfile.TemporaryDirectory() as tmp, EmbeddedS3(data_dir=summary["store"]) as s3:
        model = storage.fetch_published(summary["published_uri"], Path(tmp) / "qa", client=s3.client())
        return [{"question": q, "expected": want, "answer": answer(model, q, context)[0]["text"]}
                for context, q, want in QUESTIONS]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[15.0])
    p.add_argument("--shares", type=float, nargs="+", default=[None], help="budget_pretrain_share of each run")
    p.add_argument("--preset", help="the model (default: the recipe's for the budget)")
    p.add_argument("--corpus", help="pretraining text to use whole (default: run-local's, enwiki cut to the budget's size)")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "scratchbert-qa-budget"))
    args = p.parse_args()
    require_shared_data()
    rows = []
    for minutes in args.minutes:
        for share in args.shares:
            workdir = Path(args.workdir) / (f"{args.preset or 'recipe'}-{minutes:g}min" + ("" if share is None else f"-share{share:g}")
                                            + ("" if args.corpus is None else f"-{Path(args.corpus).stem}"))
            rows.append(run(minutes, args.preset, workdir, share, args.corpus))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    emit({"benchmark": "qa_budget", "rows": rows})


if __name__ == "__main__":
    main()
