"""Shared helpers for the benchmarks: data location, the stock recipe, timing, JSON output.

Benchmarks are never tests: they print one JSON document on stdout and compare side by side
in the same run. They read ``../shared/data`` and print ``{"skipped": reason}`` without it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from scratchbert_pipelines.local_run import STAND_INS, WIKITEXT2_BYTES, stand_in_data

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = stand_in_data()  # ../shared/data beside the checkout, or $SCRATCHBERT_SHARED_DATA
ENWIKI_TRAIN = SHARED_DATA / STAND_INS["corpus"]
ENWIKI_VALID = SHARED_DATA / "enwiki" / "valid.txt"
SQUAD_TRAIN, SQUAD_DEV = SHARED_DATA / STAND_INS["squad_train"], SHARED_DATA / STAND_INS["squad_dev"]

# The article's recipe: BERT-base, Hugging Face defaults, lr 5e-5, batch 16, no warmup,
# fp32, padding to max length, MLM logits over every position, MLM output bias started at zero.
ARTICLE = dict(learning_rate=5e-5, batch_size=16, warmup_fraction=0.0, weight_decay=0.0,
               adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, dropout=0.1,
               unigram_bias=False)


def emit(result: dict) -> None:
    result.setdefault("machine", {"cpu": platform.processor() or platform.machine(),
                                  "cores": os.cpu_count(), "python": sys.version.split()[0]})
    try:
        import torch

        result["machine"]["torch"] = torch.__version__
        result["machine"]["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            result["machine"]["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    print(json.dumps(result, indent=2, sort_keys=True))


def require_shared_data() -> None:
    if not ENWIKI_TRAIN.is_file():
        emit({"skipped": f"{ENWIKI_TRAIN} not found (the benchmarks read ../shared/data)"})
        sys.exit(0)


def best_seconds(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` after one warm-up call (GPU work synchronised)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for _ in range(repeats + 1):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times[1:])


def matmul_peak(dtype_name: str = "bfloat16", n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square ``torch.mm`` on this machine (the best of ``repeats``)."""
    import torch

    dtype = getattr(torch, dtype_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        n = max(n, 8192)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n ** 3 / best_seconds(lambda: torch.mm(a, b), repeats)


def prepared_data(workdir: Path, vocab_size: int = 30522, max_seq_len: int = 128,
                  max_bytes: int = WIKITEXT2_BYTES, valid: bool = True, dupe_factor: int = 1) -> tuple[Path, Path, dict]:
    """Tokenizer and MLM+NSP dataset for the first ``max_bytes`` of enwiki (cached in ``workdir``)."""
    from scratchbert.pretraining_data import DatasetConfig, build_dataset
    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    dupe = f"-dupe{dupe_factor}" if dupe_factor != 1 else ""
    tok, data = (workdir / f"tok-{vocab_size}-{max_bytes}",
                 workdir / f"data-{vocab_size}-{max_bytes}-{max_seq_len}-{'enwiki-valid' if valid else 'heldout'}{dupe}")
    timings = {}
    if not tok.is_dir():
        t = time.perf_counter()
        train_tokenizer(TokenizerConfig(corpus=str(ENWIKI_TRAIN), out=str(tok), vocab_size=vocab_size,
                                        max_corpus_bytes=max_bytes))
        timings["tokenizer_seconds"] = time.perf_counter() - t
    if not data.is_dir():
        t = time.perf_counter()
        build_dataset(DatasetConfig(corpus=str(ENWIKI_TRAIN), tokenizer=str(tok), out=str(data), max_seq_len=max_seq_len,
                                    max_corpus_bytes=max_bytes, valid_corpus=str(ENWIKI_VALID) if valid else "",
                                    max_valid_corpus_bytes=2_000_000, dupe_factor=dupe_factor))
        timings["dataset_seconds"] = time.perf_counter() - t
    return tok, data, timings


def op_clock():
    """A context manager that times every ATen operator it sees by the wall clock (CPU only).

    Where the time of a CPU training step goes, including the backward (the autograd engine
    runs a CPU backward on the calling thread, inside the mode), with each matmul put in its
    role by its operands: forward linear layers (``addmm``), weight gradients (``dY.T @ x``,
    a transposed first operand), other plain matmuls (input gradients) and batched ones
    (attention), each with the TFLOP/s it reached inside the step, which
    ``torch.profiler``'s table (per operator name and shape) does not give. Its
    ``report(step_seconds)`` is JSON-ready. On a GPU, where operators only queue kernels,
    use the profiler.
    """
    import collections

    from torch.utils._python_dispatch import TorchDispatchMode

    def matmul(name: str, args):
        """(role, FLOPs) of a matmul operator, None for any other."""
        if name not in ("mm", "addmm", "bmm", "baddbmm"):
            return None
        a, b = args[1:3] if name in ("addmm", "baddbmm") else args[:2]
        if name in ("bmm", "baddbmm"):
            role = "matmul: batched (attention)"
        elif name == "addmm":
            role = "matmul: with bias (forward linear layers)"
        elif a.stride(0) == 1 and a.size(0) > 1:  # dY.T @ x: a transposed (column-major) first operand
            role = "matmul: transposed first operand (weight gradients)"
        else:
            role = "matmul: plain (input gradients, ...)"
        return role, 2.0 * a.numel() * b.shape[-1]

    class OpClock(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seconds = collections.Counter()
            self.flops = collections.Counter()
            self.calls = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            t = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            dt = time.perf_counter() - t
            name = func.__name__.split(".")[0]
            key, flop = matmul(name, args) or (name, 0.0)
            self.seconds[key] += dt
            self.calls[key] += 1
            self.flops[key] += flop
            return out

        def report(self, total_seconds: float, top: int = 20) -> dict:
            rows = {}
            for key, s in self.seconds.most_common(top):
                row = {"seconds": round(s, 4), "share": round(s / total_seconds, 4), "calls": self.calls[key]}
                if self.flops[key]:
                    row["flop"], row["tflops"] = self.flops[key], round(self.flops[key] / s / 1e12, 3)
                rows[key] = row
            matmul = sum(s for k, s in self.seconds.items() if k.startswith("matmul"))
            return {"seconds": round(total_seconds, 3), "matmul_share": round(matmul / total_seconds, 4),
                    "operators": rows}

    return OpClock()
