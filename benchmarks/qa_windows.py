"""What an epoch of QA fine-tuning costs at each window length and stride, SQuAD's training set.

For each ``--windows`` pair (tokens per window / overlap, ``qa-finetune --max-seq-len
--doc-stride``) it cuts all of ``squad/train-v1.1.json`` into training windows as the stage does
(``scratchbert.qa.build_features``), batches them as the stage does (``LengthBuckets``, batches
of ``--batch-size``) and reports the windows, the share that holds no answer, the steps and the
padded tokens of one epoch; and the epoch's seconds of the recipe's ``--preset`` on this
machine: each batch at the seconds a step of its padded length takes here, interpolated from
run-local's own probe (``scratchbert.qa.training_step_seconds``) timed at ``--lengths``. Shorter
windows save attention on long contexts but cut them into more, overlapping windows.

    python benchmarks/qa_windows.py [--windows 384/128 256/85 192/64] [--tokenizer TOK]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import SQUAD_TRAIN, emit, prepared_data, require_shared_data


def epoch_batches(lengths: np.ndarray, batch_size: int) -> list[int]:
    """The padded length of each batch of one epoch, batched as the stage batches (by length)."""
    from scratchbert.qa import LengthBuckets

    order = list(LengthBuckets(lengths.tolist(), batch_size, seed=42))
    return [int(lengths[order[i:i + batch_size]].max()) for i in range(0, len(order), batch_size)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", nargs="+", default=["384/128", "320/106", "256/85", "192/64", "128/42"],
                   help="window/stride pairs in tokens")
    p.add_argument("--tokenizer", help="a tokenizer or model folder (default: the main job's, trained on its 11 MB)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 192, 256, 320, 384],
                   help="padded lengths at which a step is timed")
    p.add_argument("--probe-seconds", type=float, default=6.0)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "scratchbert-bench"))
    args = p.parse_args()
    require_shared_data()

    from transformers import AutoTokenizer

    from scratchbert.qa import build_features, load_squad, training_step_seconds

    tokenizer_dir = args.tokenizer or prepared_data(Path(args.workdir))[0]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    squad, _ = load_squad(str(SQUAD_TRAIN))
    step = {length: training_step_seconds(args.preset, vocab_size=tokenizer.vocab_size, batch_size=args.batch_size,
                                          length=length, seconds=args.probe_seconds) for length in args.lengths}
    lengths, seconds = np.array(sorted(step)), np.array([step[k] for k in sorted(step)])
    arms = {}
    for pair in args.windows:
        window, stride = (int(x) for x in pair.split("/"))
        features = build_features(squad, tokenizer, window, stride, train=True)
        sizes = np.array([len(ids) for ids in features["input_ids"]])
        cls = np.array([ids.index(tokenizer.cls_token_id) for ids in features["input_ids"]])
        padded = epoch_batches(sizes, args.batch_size)
        arms[pair] = {"windows": len(sizes), "no_answer_share": round(float(np.mean(np.array(features["start_positions"]) == cls)), 4),
                      "mean_window_tokens": round(float(sizes.mean()), 1), "steps": len(padded),
                      "padded_tokens_millions": round(sum(padded) * args.batch_size / 1e6, 2),
                      "epoch_minutes": round(float(np.interp(padded, lengths, seconds).sum()) / 60, 2)}
    base = arms[args.windows[0]]["epoch_minutes"]
    for arm in arms.values():
        arm["epoch_vs_first"] = round(arm["epoch_minutes"] / base, 3)
    emit({"benchmark": "qa_windows", "preset": args.preset, "batch_size": args.batch_size,
          "step_seconds_by_length": {str(k): round(v, 4) for k, v in step.items()}, "arms": arms})


if __name__ == "__main__":
    main()
