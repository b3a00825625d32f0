"""``torchrun --nproc_per_node 2 ... scratchbert pretrain`` on CPUs (gloo), on the generated dataset.

Every test starts ``torch.distributed.run`` as a subprocess, the way a user runs it, with one
thread per process. A tracer script stands in for ``python -m scratchbert.cli`` where a test
needs to see inside each rank: it records the examples each rank reads, the step each rank
ends on, and can make one rank's clock run fast.

The generated training split has about 3,840 examples in one shard: at 16 examples per rank,
32 a step, an epoch is about 120 steps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from test_pretrain import _kill_when  # the same folder: pytest puts it on the path

from scratchbert import shards

TRACER = """
import json, os, sys, time, types
rank = int(os.environ["RANK"])
from pathlib import Path
folder = Path(sys.argv[1])
from scratchbert import shards, schedule
fetch = shards.ShardedExamples.__getitems__
log = open(folder / f"rank{rank}.trace", "a")
def traced(self, indices):
    log.write(json.dumps([int(i) for i in indices]) + "\\n")
    log.flush()
    return fetch(self, indices)
shards.ShardedExamples.__getitems__ = traced
if os.environ.get("FAST_CLOCK_RANK") == str(rank):  # this rank's clock runs three times as fast
    schedule.time = types.SimpleNamespace(monotonic=lambda: 3 * time.monotonic())
if os.environ.get("NO_BF16_RANK"):  # that rank's hardware has no bf16, the others' has
    from scratchbert import pretrain
    pretrain.cpu_has_bf16 = lambda: os.environ["NO_BF16_RANK"] != str(rank)
import transformers
train = transformers.Trainer.train
def recorded(self, *a, **kw):
    result = train(self, *a, **kw)
    (folder / f"rank{rank}.steps").write_text(str(self.state.global_step))
    return result
transformers.Trainer.train = recorded
from scratchbert.cli import main
sys.exit(main(sys.argv[2:]))
"""

# 130 steps: past the first epoch (about 120 steps at 32 examples a step)
SETTINGS = dict(preset="nano", max_steps=130, save_steps=40, eval_steps=50, logging_steps=1, num_workers=0)


def _env() -> dict[str, str]:
    return {**os.environ, "SCRATCHBERT_TENSORBOARD": "0", "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flags(settings: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]


def _torchrun(dataset: Path, out: Path, trace: Path | None = None, nproc: int = 2, **settings) -> list[str]:
    """The command line of a ``pretrain`` run under torchrun (traced into the folder ``trace``)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_port", str(_free_port())]
    if trace is not None:
        trace.mkdir(parents=True, exist_ok=True)
        (trace / "tracer.py").write_text(TRACER)
        launcher += [str(trace / "tracer.py"), str(trace)]
    else:
        launcher += ["-m", "scratchbert.cli"]
    return [*launcher, "pretrain", "--dataset", str(dataset), "--out", str(out), *_flags(settings)]


def _kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every process under it, at once: torchrun starts each rank in a
    session of its own, so killing torchrun's process group would leave the ranks running."""
    try:
        job = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in job:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(job[1:], timeout=30)  # not torchrun: the caller's wait() reaps it and reads its status


def _launch(command: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """Run ``command`` to its end; past ``timeout`` seconds, kill it with every process it started
    (ranks left waiting for one another would otherwise wait for gloo's 30 minutes)."""
    proc = subprocess.Popen(command, env={**_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_job(proc)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(command[:6])} ... did not end within {timeout} s: {stderr[-2000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _run(command: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    done = _launch(command, timeout, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _result(done: subprocess.CompletedProcess) -> dict:
    """The one result the job prints (rank 0's), after the Trainer's log lines."""
    lines = done.stdout.splitlines()
    assert lines.count("{") == 1, done.stdout[-2000:]
    return json.loads("\n".join(lines[lines.index("{"):]))


def _losses(out: Path) -> np.ndarray:
    history = json.loads((Path(f"{out}-logs") / "log_history.json").read_text())["log_history"]
    return np.array([h["loss"] for h in history if "loss" in h])


def _weights(out: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(out / "model.safetensors")


def _batches(trace: Path, rank: int) -> list[list[int]]:
    return [json.loads(line) for line in (trace / f"rank{rank}.trace").read_text().splitlines()]


def _assert_complete(out: Path) -> None:
    """A whole model folder and its records, nothing half-written beside them."""
    from transformers import AutoConfig

    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert _weights(out) and AutoConfig.from_pretrained(out).model_type == "bert"
    assert {"metrics.json", "log_history.json"} <= {p.name for p in Path(f"{out}-logs").iterdir()}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert not Path(f"{out}-checkpoints").exists()


@pytest.fixture(scope="module")
def two_and_one(built_dataset, tmp_path_factory):
    """Two runs of 130 steps: 2 processes x 16 examples (traced), and 1 process x 32 examples."""
    root = tmp_path_factory.mktemp("torchrun")
    two = root / "two" / "model"
    done = _run(_torchrun(built_dataset, two, trace=root / "trace", batch_size=16, **SETTINGS))
    one = root / "one" / "model"
    _run([sys.executable, "-m", "scratchbert.cli", "pretrain", "--dataset", str(built_dataset), "--out", str(one),
          "--batch-size=32", *_flags(SETTINGS)], timeout=300)
    return {"two": two, "one": one, "trace": root / "trace", "result": _result(done), "dataset": built_dataset}


@pytest.mark.slow
def test_two_processes_follow_the_loss_curve_of_one_with_the_doubled_batch(two_and_one):
    """Both runs train on the same examples in the same steps (the global batch of 32 is the
    single process's batch), from the same initial weights, at the same learning rate. They
    differ only in their random numbers: each rank masks its half of the batch and drops units
    with its own, and DDP averages the two halves' mean losses where one process averages over
    all masked tokens. Step by step the two losses then differ by up to 0.6 (the masking noise of
    a 32-example batch, and the drift it causes); over windows of 26 steps the means have stayed
    within 0.06 of each other, and over the whole run within 0.02. The tolerances, 0.15 and 0.08,
    leave room for other random numbers, and fail a loss counted once per process (twice as
    large), ranks that step apart, or a run that trains on other examples or learns nothing."""
    two, one = _losses(two_and_one["two"]), _losses(two_and_one["one"])
    assert len(two) == len(one) == SETTINGS["max_steps"]
    windows = (two - one).reshape(-1, 26).mean(1)
    assert np.abs(windows).max() < 0.15 and abs((two - one).mean()) < 0.08, windows
    curve = one.reshape(-1, 26).mean(1)
    assert curve[-1] < curve[0] - 0.1, curve  # it falls: the comparison is not of two flat lines
    result, metrics = two_and_one["result"], json.loads((Path(f"{two_and_one['two']}-logs") / "metrics.json").read_text())
    assert result == json.loads(json.dumps(metrics)) and result["world_size"] == 2 and result["steps"] == 130
    # the whole job's tokens: both ranks'. One process with the doubled batch reads the same
    # examples, unless an epoch's last batch has fewer examples than there are ranks: two ranks
    # fold it into the batch before, one process takes it as a step of its own, so from the
    # second epoch on it is a batch (at most 32 examples of 64 tokens) behind.
    single = json.loads((Path(f"{two_and_one['one']}-logs") / "metrics.json").read_text())
    sizes = shards.ShardedExamples(two_and_one["dataset"], "train").sizes
    if len(shards.ShardBatchSampler(sizes, 16, world_size=2)) == len(shards.ShardBatchSampler(sizes, 32)):
        assert result["train_tokens"] == single["train_tokens"]
    else:
        assert 0 < result["train_tokens"] - single["train_tokens"] <= 32 * 64


@pytest.mark.slow
def test_every_example_is_seen_once_per_epoch_across_the_ranks(two_and_one, built_dataset):
    """The examples each rank read, in order: over the first epoch's steps, together, every
    training example exactly once; the second epoch starts another order."""
    trace = two_and_one["trace"]
    examples = shards.ShardedExamples(built_dataset)
    n, steps = len(examples), len(shards.ShardBatchSampler(examples.sizes, 16, rank=0, world_size=2))
    ranks = [_batches(trace, r) for r in (0, 1)]
    assert steps < SETTINGS["max_steps"]
    epoch = [i for batches in ranks for b in batches[:steps] for i in b]
    assert sorted(epoch) == list(range(n))
    # the last step takes the rest (a smaller batch), dealt out within one example
    assert abs(len(ranks[0][steps - 1]) - len(ranks[1][steps - 1])) <= 1
    assert not set(ranks[0][0]) & set(ranks[1][0])
    assert ranks[0][steps:steps + 5] != ranks[0][:5]  # the second epoch: another order
    assert [(trace / f"rank{r}.steps").read_text() for r in (0, 1)] == ["130", "130"]


def test_each_rank_reads_its_half_of_every_global_batch_of_the_real_shards(built_dataset):
    """The sampler on the generated dataset's shards, rank by rank: each step's two halves are the
    single process's batch of 32 (the same global order), dealt out without overlap."""
    examples = shards.ShardedExamples(built_dataset, "train")

    def sampler(rank, world, batch):
        return shards.ShardBatchSampler(examples.sizes, batch, seed=3, lengths=examples.lengths, rank=rank,
                                        world_size=world)

    ranks = [list(sampler(r, 2, 16)) for r in (0, 1)]
    single = list(sampler(0, 1, 32))
    assert len(single) == -(-len(examples) // 32)
    # an epoch's last batch with fewer examples than ranks is folded into the batch before
    assert len(ranks[0]) == len(ranks[1]) == len(single) - (len(examples) % 32 == 1)
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        job = single[step] if step < len(ranks[0]) - 1 else [i for batch in single[step:] for i in batch]
        assert not set(a) & set(b) and sorted(a + b) == sorted(job)
    assert sorted(i for r in ranks for b in r for i in b) == list(range(len(examples)))


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_exactly_and_only_with_two_processes(built_dataset, two_and_one, tmp_path):
    """The same 2-process run as in ``two_and_one``, killed (SIGKILL to torchrun and both ranks)
    once its checkpoint at step 120, inside the second epoch, is complete. A single process
    refuses those checkpoints in one line and leaves them; two processes resume and end with the
    uninterrupted run's weights (the second epoch's order and masks, not the first's again)."""
    out = tmp_path / "model"
    checkpoints = Path(f"{out}-checkpoints")
    command = _torchrun(built_dataset, out, batch_size=16, **SETTINGS)
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # rank 0 writes data_position.json once every rank has saved its part: the checkpoint is complete
    _kill_when(proc, checkpoints / "checkpoint-120" / shards.DATA_POSITION, kill=_kill_job)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    position = json.loads((checkpoints / "checkpoint-120" / shards.DATA_POSITION).read_text())
    assert position["batches"] == 120 and position["epoch"] == 1 and position["batch_in_epoch"] > 0, position
    assert position["order"]["world_size"] == 2
    assert {p.name for p in (checkpoints / "checkpoint-120").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}

    before = sorted(p.name for p in checkpoints.rglob("*"))
    alone = _launch([sys.executable, "-m", "scratchbert.cli", "pretrain", "--dataset", str(built_dataset),
                     "--out", str(out), "--batch-size=16", *_flags(SETTINGS)])
    assert alone.returncode == 2
    line = alone.stderr.strip().splitlines()[-1]
    assert "training processes 2 -> 1" in line and "belong to another pretraining run" in line, alone.stderr[-2000:]
    assert sorted(p.name for p in checkpoints.rglob("*")) == before and not out.exists()

    result = _result(_run(command))
    assert result["resumed"] is True and result["steps"] == 130
    _assert_complete(out)
    expected, got = _weights(two_and_one["two"]), _weights(out)
    assert expected.keys() == got.keys()
    for name in expected:  # the same computation in the same order: the same numbers
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert _losses(out)[-10:].tolist() == _losses(two_and_one["two"])[-10:].tolist()


@pytest.mark.slow
def test_a_time_budget_stops_every_rank_on_the_same_step(built_dataset, tmp_path):
    """Rank 1's clock runs three times as fast as rank 0's: if each rank read its own, rank 1
    would stop after a third of the budget while rank 0 trains on, waiting at its next gradient
    exchange for a rank that has gone. Rank 0's reading decides for both."""
    trace = tmp_path / "trace"
    command = _torchrun(built_dataset, tmp_path / "model", trace=trace, preset="nano", batch_size=16,
                        time_budget_minutes=0.1, eval_steps=0, logging_steps=10, num_workers=0)
    done = _run(command, timeout=120, FAST_CLOCK_RANK="1")
    steps = [int((trace / f"rank{r}.steps").read_text()) for r in (0, 1)]
    assert steps[0] == steps[1] == _result(done)["steps"] > 0
    _assert_complete(tmp_path / "model")


def test_processes_whose_hardware_picks_another_precision_are_refused_in_one_line(built_dataset, tmp_path):
    """Nodes of different hardware (an A100 and a T4): auto picks each process's precision from its
    own device, and the job trained in two arithmetics, silently (rank 0 in bf16, rank 1 in fp16
    with loss scaling, their gradients averaged). Here rank 1's CPU has no bf16 while rank 0's has."""
    command = _torchrun(built_dataset, tmp_path / "model", trace=tmp_path / "trace", preset="nano", batch_size=16,
                        max_steps=3, eval_steps=0, logging_steps=1, num_workers=0)
    done = _launch(command, timeout=120, NO_BF16_RANK="1")
    assert done.returncode != 0
    line = ("scratchbert pretrain: error: the training processes would not compute alike: rank 0 trains in bf16, "
            "rank 1 in fp32 (--precision auto); run every process on the same kind of GPU, or give --precision fp32")
    assert done.stderr.count(line) == 2, done.stderr[-3000:]  # every rank says it
    assert "internal error" not in done.stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_runs_in_a_row_all_leave_complete_output_folders(built_dataset, tmp_path):
    """The issue's failing command (20 steps, a checkpoint at 10), five times: every run leaves its
    whole model folder. Before, with both ranks writing it, 8 runs of 8 lost their weights. Five,
    not the issue's twenty: each run starts two Python processes that import torch and
    transformers (about 10 s on 2 cores), and a race that lost eight runs of eight would show in
    five."""
    for i in range(5):
        out = tmp_path / f"run{i}" / "model"
        done = _run(_torchrun(built_dataset, out, preset="nano", max_steps=20, save_steps=10, batch_size=16,
                              eval_steps=0, logging_steps=10, num_workers=0))
        result = _result(done)
        assert result["steps"] == 20 and result["world_size"] == 2
        assert "find_unused_parameters" not in done.stderr  # DDP does not search for unused parameters
        _assert_complete(out)


@pytest.mark.slow
def test_evaluation_under_torchrun_gives_the_numbers_of_one_process(built_dataset, tmp_path):
    """Rank 0 evaluates the whole validation set alone, with the masks one process draws: the
    same numbers. 257 examples are four batches of 64 and one of 1: a short batch's loss counted
    64 times under torchrun (val_loss 7.127 against one process's 7.133 with a last batch of 44),
    and a batch of one lost its next-sentence labels (the pair of label tensors was cut to its
    first, not each tensor to the batch). One step at a learning rate of 1e-30 leaves both runs
    the same seeded starting weights."""
    settings = dict(preset="nano", max_steps=1, learning_rate=1e-30, batch_size=8, eval_steps=0, eval_examples=257,
                    logging_steps=1, num_workers=0, precision="fp32")
    two = _result(_run(_torchrun(built_dataset, tmp_path / "two" / "model", **settings)))
    one = _result(_run([sys.executable, "-m", "scratchbert.cli", "pretrain", "--dataset", str(built_dataset),
                        "--out", str(tmp_path / "one" / "model"), *_flags(settings)]))
    assert two["world_size"] == 2 and one["world_size"] == 1
    for name in ("val_loss", "val_mlm_accuracy", "val_nsp_accuracy"):
        assert two[name] == pytest.approx(one[name], rel=1e-6, abs=1e-9), name
