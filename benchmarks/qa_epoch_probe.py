"""The QA epoch a budgeted ``run-local`` reserves, from a probe, against the one a run measured.

    python benchmarks/qa_epoch_probe.py [--presets tiny tiny4 mini] [--rounds 3] [--runs RUN_DIR ...]

Times ``run-local``'s probe (``scratchbert.qa.training_step_seconds``: QA steps of a new model on
random batches of the recipe's size) ``--rounds`` times per preset, in alternating order, and
prints, per preset, the median step and the epoch minutes ``run-local`` would reserve now, next to
the table's (a slow day's, what runs reserved before the probe). For each of ``--runs`` (a finished
run's folder, ``runs/local/<run>``), what it reserved and what an epoch took there
(``epoch_minutes`` of its QA stage), and its pretraining step against the probe's step now
(``PRETRAIN_STEP_PER_PROBE_STEP``, which predicts a model's pretraining steps): the checks of the
probe's calibration. Run it on an idle machine, right after the runs it checks.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import emit

from scratchbert_pipelines import local_run, parameters


def run_epochs(run_dir: Path, probes: dict) -> dict:
    """What a finished run reserved for a QA epoch and what one took there; its pretraining step
    against the probe's median step for its model now (``probes``)."""
    arguments = json.loads((run_dir / "arguments.json").read_text())
    stages = local_run.collect_results(run_dir / "outputs")
    pretrain = stages.get("pretrain", {})
    step = pretrain["train_seconds"] / pretrain["steps"] if pretrain.get("steps") else None
    probe = probes.get(arguments.get("preset"), {}).get("median_step_seconds")
    return {"run": str(run_dir), "preset": arguments.get("preset"), "reserved": arguments.get("budget_qa_epoch_minutes"),
            "measured": stages.get("qa_finetune", {}).get("epoch_minutes"), "pretrain_steps": pretrain.get("steps"),
            "pretrain_step_seconds": step and round(step, 4),
            "pretrain_step_per_probe_step": round(step / probe, 3) if step and probe else None,
            "recipe_ratio": local_run.PRETRAIN_STEP_PER_PROBE_STEP.get(arguments.get("preset"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(local_run.QA_EPOCH_MINUTES["bf16"]))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", nargs="*", default=[], type=Path)
    args = parser.parse_args()
    vocab = parameters.BY_NAME["vocab_size"].default
    batch = local_run.REAL_DEFAULTS["qa_batch_size"]
    steps: dict[str, list[float]] = {preset: [] for preset in args.presets}
    for round_ in range(args.rounds):
        for preset in args.presets if round_ % 2 == 0 else reversed(args.presets):
            steps[preset].append(local_run.probe_qa_step_seconds(preset, vocab, batch))  # run-local's own probe
    precision = local_run.machine_precision()
    probes = {}
    for preset, seconds in steps.items():
        median = statistics.median(seconds)
        probes[preset] = {"step_seconds": [round(s, 4) for s in seconds], "median_step_seconds": round(median, 4),
                          "epoch_minutes_unrounded": round(local_run.QA_EPOCH_PROBE_STEPS * median / 60, 3),
                          "reserved_now": local_run.qa_epoch_minutes_from_step(median),
                          "table": local_run.qa_epoch_minutes(preset, precision)}
    emit({"benchmark": "qa_epoch_probe", "precision": precision, "probe_steps_per_epoch": local_run.QA_EPOCH_PROBE_STEPS,
          "margin": local_run.QA_PROBE_MARGIN, "probes": probes, "runs": [run_epochs(run, probes) for run in args.runs]})


if __name__ == "__main__":
    main()
