"""Data-parallel pretraining on CPUs: 2 processes x 1 thread (torchrun, gloo) against 1 process
x 2 threads, the same total threads and the same batch a step.

Each arm is the ``scratchbert pretrain`` command a user runs, on an enwiki sample (tokenizer
and dataset built once, cached in ``--workdir``): one process with ``--batch-size 2B`` and
``OMP_NUM_THREADS=2``, against ``torchrun --nproc_per_node 2`` with ``--batch-size B`` and one
thread each. The arms alternate, ``--repeats`` times, so a load that comes and goes on a shared
machine falls on both; one process with one thread runs beside them as a reference (what the
second thread, or the second process, adds). Reported: the job's real (non-padding) tokens per second as the command
itself reports it (every rank's tokens over the slowest rank's training time, the first steps
included in every arm alike), the median and every repeat, and the ratio of the medians.

    python benchmarks/ddp_throughput.py [--preset tiny] [--steps 60] [--batch-size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, prepared_data, require_shared_data  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_arm(processes: int, threads: int, data: Path, out: Path, *, preset: str, steps: int, batch_size: int) -> dict:
    """One ``pretrain`` run of ``processes`` processes with ``threads`` threads each; its result."""
    flags = ["pretrain", "--dataset", str(data), "--out", str(out), "--preset", preset, "--max-steps", str(steps),
             "--batch-size", str(batch_size // processes), "--eval-steps", "0", "--save-steps", str(steps + 1),
             "--num-workers", "0", "--logging-steps", str(steps), "--overwrite"]
    if processes == 1:
        command = [sys.executable, "-m", "scratchbert.cli", *flags]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", str(_free_port()), "-m", "scratchbert.cli", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SCRATCHBERT_TENSORBOARD": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:6])} ... failed: {done.stderr[-2000:]}")
    lines = done.stdout.splitlines()
    return json.loads("\n".join(lines[lines.index("{"):]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32, help="examples a step, all processes together")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "scratchbert-ddp-bench"))
    args = p.parse_args()
    if args.batch_size < 2 or args.batch_size % 2:  # the two processes take half each: the same batch as one
        p.error(f"--batch-size {args.batch_size} must be even (and at least 2): each of the two processes takes half of it")
    require_shared_data()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _, data, _ = prepared_data(workdir, max_bytes=4_000_000, valid=False)
    arms = {"1 process x 2 threads": (1, 2), "2 processes x 1 thread (gloo)": (2, 1),
            "1 process x 1 thread (reference)": (1, 1)}
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, (processes, threads) in arms.items():
            runs[name].append(run_arm(processes, threads, data, workdir / "model", preset=args.preset,
                                      steps=args.steps, batch_size=args.batch_size))
    result = {"preset": args.preset, "steps": args.steps, "batch_size_per_step": args.batch_size,
              "max_seq_len": 128, "arms": {}}
    for name, results in runs.items():
        rates = [r["tokens_per_second"] for r in results]
        result["arms"][name] = {"tokens_per_second_median": round(statistics.median(rates)),
                                "tokens_per_second": [round(x) for x in rates],
                                "train_seconds": [r["train_seconds"] for r in results],
                                "train_tokens": results[0]["train_tokens"], "final_loss": round(results[0]["train_loss"], 3)}
    one, two, _ = (result["arms"][name]["tokens_per_second_median"] for name in arms)
    result["two_processes_over_one"] = round(two / one, 3)
    emit(result)


if __name__ == "__main__":
    main()
