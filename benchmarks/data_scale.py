"""Data stages at scale: memory and time of the tokenizer and dataset stages, and pretraining's
memory, on a 1 GB corpus against the 64 MB ``enwiki/train.txt`` in the same run.

The large corpus is made here, in a temporary folder (deleted afterwards unless ``--keep``):
the articles of ``enwiki/train.txt`` and ``enwiki/valid.txt``, shuffled anew in every round,
written until it holds ``--large-bytes``. (Its unique text is only those 74 MB: a real
gigabyte has more distinct words, so the tokenizer's word table would be larger; see
docs/performance.md.) Each stage runs as its own ``scratchbert`` process; memory is the sum
of the resident memory of the stage's whole process tree (workers included), sampled every
0.25 s, with its proportional share (PSS, shared pages counted once) beside it. Also measured:
the dataset stage with one worker against two, and the vocabulary's unknown-token rate and
tokens per word, on 2 MB of held-out articles (``enwiki/valid.txt``), for tokenizers trained
on samples of several sizes.

    python benchmarks/data_scale.py [--large-bytes 1000000000] [--pretrain-steps 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ENWIKI_TRAIN, ENWIKI_VALID, emit, require_shared_data

MB = 1_000_000


def make_corpus(path: Path, target_bytes: int, seed: int = 0) -> int:
    """Shuffled rounds of every article of enwiki train + valid until ``target_bytes``; returns its size."""
    from scratchbert.corpus import iter_documents

    docs = list(iter_documents(str(ENWIKI_TRAIN))) + list(iter_documents(str(ENWIKI_VALID)))
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target_bytes:
            rng.shuffle(docs)
            for doc in docs:
                data = doc + "\n\n"
                f.write(data)
                written += len(data.encode("utf-8"))
                if written >= target_bytes:
                    break
    return path.stat().st_size


class TreeMemory:
    """Peak of the summed RSS (and PSS, and anonymous RSS) of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.25):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = {"rss": 0, "pss": 0, "rss_anon": 0}
        self.peak_processes = 0
        self.main_cpu = 0.0  # the stage's own process (the workers' time is in the tree's total)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = {"rss": 0, "pss": 0, "rss_anon": 0}
        try:
            times = self.root.cpu_times()
            self.main_cpu = times.user + times.system
        except psutil.Error:
            pass
        for p in procs:
            try:
                with open(f"/proc/{p.pid}/smaps_rollup") as f:
                    lines = f.read().splitlines()[1:]  # the first line names the address range
                rollup = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines)}
                total["rss"] += rollup.get("Rss", 0)
                total["pss"] += rollup.get("Pss", 0)
                total["rss_anon"] += rollup.get("Anonymous", 0)
            except (OSError, ValueError):
                continue
        for k, v in total.items():
            self.peak[k] = max(self.peak[k], v)
        self.peak_processes = max(self.peak_processes, len(procs))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {f"peak_{k}_mb": round(v / MB, 1) for k, v in self.peak.items()} | {
            "processes": self.peak_processes, "main_process_cpu_seconds": round(self.main_cpu, 1)}


def run_stage(args: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``scratchbert ARGS`` with its process tree's memory sampled; wall seconds and peaks."""
    return run_command([sys.executable, "-m", "scratchbert.cli", "-q", *args], log, env)


def run_command(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` (output to ``log``) with its process tree's memory sampled; wall seconds and peaks."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        mem = TreeMemory(proc.pid)
        code = proc.wait()
    seconds = time.perf_counter() - t
    peaks = mem.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the stage and every worker it reaped
    peaks["cpu_seconds"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed (exit {code}); see {log}:\n{log.read_text()[-2000:]}")
    return {"seconds": round(seconds, 2), **peaks}


def vocabulary(work: Path, corpus: Path, sample_sizes: list[int], heldout_bytes: int = 2 * MB) -> list[dict]:
    """Tokenizers trained on even samples of ``corpus`` of each size, scored on held-out articles."""
    from scratchbert.corpus import iter_documents
    from scratchbert.tokenizer import load_tokenizer, tokenizer_quality

    heldout = list(iter_documents(str(ENWIKI_VALID), heldout_bytes))
    rows = []
    for size in sample_sizes:
        out = work / f"tok-sample-{size}"
        run = run_stage(["tokenizer", "--corpus", str(corpus), "--out", str(out), "--sample-bytes", str(size)],
                        work / f"tok-sample-{size}.log")
        quality = tokenizer_quality(load_tokenizer(out), heldout)
        rows.append({"sample_bytes": size, "seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"],
                     "unk_rate": quality["unk_rate"], "tokens_per_word": round(quality["tokens_per_word"], 4)})
        shutil.rmtree(out)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--large-bytes", type=int, default=1_000_000_000, help="size of the large corpus (default 1 GB)")
    p.add_argument("--pretrain-steps", type=int, default=300, help="pretraining steps on each dataset (0: skip)")
    p.add_argument("--sample-sizes", default="4000000,16000000,64000000",
                   help="tokenizer sample sizes for the vocabulary comparison (empty: skip)")
    p.add_argument("--keep", default="", help="work in this folder and keep it (default: a temporary folder, deleted)")
    args = p.parse_args()
    require_shared_data()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="scratchbert-datascale-"))
    work.mkdir(parents=True, exist_ok=True)
    env_note = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    try:
        corpora = {"64MB": ENWIKI_TRAIN, "large": work / "large.txt"}
        if not corpora["large"].is_file():
            make_corpus(corpora["large"], args.large_bytes)
        sizes = {name: path.stat().st_size for name, path in corpora.items()}
        result: dict = {"benchmark": "data_scale", "corpus_bytes": sizes, "environment": env_note, "stages": {}}
        stages = result["stages"]
        for name, corpus in corpora.items():
            tok = work / f"tok-{name}"
            stages[f"tokenizer_{name}"] = run_stage(["tokenizer", "--corpus", str(corpus), "--out", str(tok)],
                                                    work / f"tokenizer-{name}.log")
            procs = (1, 2) if name == "64MB" else (2,)
            for num_proc in procs:
                data = work / f"data-{name}-np{num_proc}"
                stages[f"dataset_{name}_np{num_proc}"] = run_stage(
                    ["dataset", "--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(data),
                     "--num-proc", str(num_proc)], work / f"dataset-{name}-np{num_proc}.log")
        # Pretraining's memory moves from run to run with the allocator's history (freed memory is
        # kept for reuse), so each dataset is trained on twice, alternately. One thread: the
        # memory does not depend on it, and two threads on a busy 2-core machine crawl.
        for repeat in range(2 if args.pretrain_steps else 0):
            for name in corpora:
                model = work / f"model-{name}"
                stages[f"pretrain_{name}_{repeat + 1}"] = run_stage(
                    ["pretrain", "--dataset", str(work / f"data-{name}-np2"), "--out", str(model), "--preset", "tiny",
                     "--max-steps", str(args.pretrain_steps), "--batch-size", "32", "--eval-steps", "0",
                     "--save-steps", "1000000", "--logging-steps", "50"], work / f"pretrain-{name}-{repeat + 1}.log",
                    env={"OMP_NUM_THREADS": "1"})
                shutil.rmtree(model, ignore_errors=True)
                shutil.rmtree(f"{model}-logs", ignore_errors=True)
        for name in corpora:
            for stage in (f"tokenizer_{name}", f"dataset_{name}_np2"):
                stages[stage]["seconds_per_gb"] = round(stages[stage]["seconds"] / sizes[name] * 1e9, 1)

        def ratio(key: str, a: str, b: str) -> float:
            return round(stages[a][key] / stages[b][key], 3)

        checks = {
            "tokenizer_memory_large_over_64MB": ratio("peak_rss_mb", "tokenizer_large", "tokenizer_64MB"),
            "dataset_memory_large_over_64MB": ratio("peak_rss_mb", "dataset_large_np2", "dataset_64MB_np2"),
            "tokenizer_pss_large_over_64MB": ratio("peak_pss_mb", "tokenizer_large", "tokenizer_64MB"),
            "dataset_pss_large_over_64MB": ratio("peak_pss_mb", "dataset_large_np2", "dataset_64MB_np2"),
            "tokenizer_time_per_byte_large_over_64MB": ratio("seconds_per_gb", "tokenizer_large", "tokenizer_64MB"),
            "dataset_time_per_byte_large_over_64MB": ratio("seconds_per_gb", "dataset_large_np2", "dataset_64MB_np2"),
            "dataset_speedup_np2_over_np1": round(stages["dataset_64MB_np1"]["seconds"] / stages["dataset_64MB_np2"]["seconds"], 3),
            # what two workers could give on two free cores: one worker's CPU time over half the pair's
            "dataset_cpu_bound_speedup_np2_over_np1": round(
                2 * stages["dataset_64MB_np1"]["cpu_seconds"] / stages["dataset_64MB_np2"]["cpu_seconds"], 3),
        }
        if args.pretrain_steps:
            def mean(key: str, name: str) -> float:
                return (stages[f"pretrain_{name}_1"][key] + stages[f"pretrain_{name}_2"][key]) / 2

            checks["pretrain_memory_large_over_64MB"] = round(mean("peak_rss_mb", "large") / mean("peak_rss_mb", "64MB"), 3)
            checks["pretrain_anonymous_memory_large_over_64MB"] = round(
                mean("peak_rss_anon_mb", "large") / mean("peak_rss_anon_mb", "64MB"), 3)
            checks["pretrain_memory_spread_same_dataset"] = round(max(
                abs(stages[f"pretrain_{n}_1"]["peak_rss_mb"] / stages[f"pretrain_{n}_2"]["peak_rss_mb"] - 1) for n in corpora), 3)
        targets = {"tokenizer_memory_large_over_64MB": ("<=", 1.2), "dataset_memory_large_over_64MB": ("<=", 1.2),
                   "tokenizer_time_per_byte_large_over_64MB": ("<=", 1.1),
                   "dataset_time_per_byte_large_over_64MB": ("<=", 1.1), "dataset_speedup_np2_over_np1": (">=", 1.7),
                   "pretrain_memory_large_over_64MB": ("within", 0.1)}
        result["checks"] = checks
        result["targets_met"] = {
            k: (checks[k] <= v if op == "<=" else checks[k] >= v if op == ">=" else abs(checks[k] - 1) <= v)
            for k, (op, v) in targets.items() if k in checks}
        if args.sample_sizes:
            result["vocabulary"] = vocabulary(work, ENWIKI_TRAIN, [int(s) for s in args.sample_sizes.split(",")])
        emit(result)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
