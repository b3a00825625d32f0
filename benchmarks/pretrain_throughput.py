"""Pretraining throughput: scratchbert's path vs the stock Hugging Face path, same run.

Stock: ``BertForPreTraining`` + ``Trainer``, every example padded to the maximum length, MLM
logits at every position, fp32, ``DataCollatorForLanguageModeling``, plain AdamW, Hugging
Face's dropout 0.1. scratchbert, as ``scratchbert pretrain`` trains by default (its dropout
default, 0; the stock dropout measured too): the sparse prediction head, length-grouped
batches padded to the longest member, the tensor collator, fused AdamW, the attention
kernel ``--attention auto`` picks at each precision (the other measured too), freed memory
kept for reuse on a CPU (:mod:`scratchbert.allocator`; glibc's default measured too), and
each precision this machine offers (``torch.compile`` measured as an option).

Reports real (non-padding) tokens per second after a warm-up, the ratio to stock, and the
model FLOP/s achieved against a large ``torch.mm`` measured in the same run; under
``matmuls``, the same machine's speed on the encoder's forward, input-gradient and
weight-gradient matmuls at a step's shapes, and the fraction of the peak a step made of
nothing else would reach.

    python benchmarks/pretrain_throughput.py [--presets tiny,base] [--steps 20] [--batch-size N] [--compile [PRESETS]]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import best_seconds, emit, matmul_peak, op_clock, prepared_data, require_shared_data

os.environ.setdefault("SCRATCHBERT_TENSORBOARD", "0")


def measure(model, collator, dataset, *, batch_size: int, steps: int, warmup: int, precision: str,
            fused: bool, grouped: bool, compile_model: bool = False, remove_unused: bool = True,
            keep_memory: bool = False, profile: bool = False) -> dict:
    """Train ``warmup + steps`` steps with the Trainer; tokens/s over the last ``steps``.

    The data loader and the step around the model are ``scratchbert pretrain``'s
    (:func:`scratchbert.pretrain.step_arguments`: workers and pinned memory on a GPU, no
    per-step NaN test). Tokens are summed on the device and the clock reads are synchronised, so a GPU
    queues steps ahead as it does in training, with no host sync per step. ``profile``: on a
    GPU the timed steps run under ``torch.profiler`` and its table of the costliest operators
    goes to stderr; on a CPU each operator is timed by the wall clock (:func:`common.op_clock`)
    and the breakdown is returned under ``operators`` (either's overhead is in that run's
    tokens/s).
    """
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from scratchbert.allocator import keep_freed_memory
    from scratchbert.pretrain import step_arguments

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    state = {"tokens": 0, "t0": None, "t1": None}
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    profiler = torch.profiler.profile(activities=activities) if profile and cuda else None  # on a GPU
    clock = op_clock() if profile and not cuda else None  # on a CPU, the wall clock per operator

    class Clock(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            if st.global_step == warmup:
                sync()
                state["t0"] = time.perf_counter()
                state["tokens"] = 0
                if profiler:
                    profiler.start()
                if clock:
                    clock.__enter__()

        def on_step_end(self, args, st, control, **kw):
            if st.global_step == warmup + steps:
                sync()
                state["t1"] = time.perf_counter()
                if clock:
                    clock.__exit__(None, None, None)
                if profiler:
                    profiler.stop()
                    print(profiler.key_averages().table(sort_by="self_device_time_total", row_limit=30,
                                                        max_name_column_width=60),
                          file=sys.stderr)

    class Counting(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            state["tokens"] = state["tokens"] + inputs["attention_mask"].sum()  # stays on the device
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch_size, max_steps=warmup + steps,
            learning_rate=1e-4, bf16=precision == "bf16", fp16=precision == "fp16",
            use_cpu=not cuda, optim="adamw_torch_fused" if fused else "adamw_torch",
            train_sampling_strategy="group_by_length" if grouped else "random", length_column_name="length",
            remove_unused_columns=remove_unused, label_names=["labels", "next_sentence_label"],
            save_strategy="no", eval_strategy="no", logging_steps=10_000, report_to=[],
            disable_tqdm=True, torch_compile=compile_model, **step_arguments(),
        )
        # the Trainer prints its summary dict on stdout, which carries only this benchmark's JSON
        with contextlib.redirect_stdout(sys.stderr), keep_freed_memory(keep_memory):
            Counting(model=model, args=args, train_dataset=dataset, data_collator=collator,
                     callbacks=[Clock()]).train()
    state["tokens"] = int(state["tokens"])
    seconds = state["t1"] - state["t0"]
    result = {"tokens_per_second": state["tokens"] / seconds, "seconds": seconds, "steps": steps}
    if clock:
        result["operators"] = clock.report(seconds)
    return result


def training_matmuls(config, *, tokens: int, dtype_name: str, peak: float, repeats: int = 5) -> dict:
    """How fast this machine runs the encoder's own matmuls, at one training step's shapes.

    Each linear layer costs three matmuls per step: forward (x @ W.T), the input gradient
    (dY @ W) and the weight gradient (dY.T @ x). Timed alone (best of ``repeats``), they give
    the fraction of the ``torch.mm`` peak a step could reach if it did nothing else: a
    ceiling set by the matmul library, not by scratchbert.
    """
    import torch
    from torch.nn import functional as F

    dtype = getattr(torch, dtype_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    h, i = config.hidden_size, config.intermediate_size
    layers = [(h, h, 4), (h, i, 1), (i, h, 1)]  # (in, out, count per block): q, k, v, output; MLP in; MLP out

    seconds = {"forward": 0.0, "input_grad": 0.0, "weight_grad": 0.0}
    flops = 0.0
    for d_in, d_out, count in layers:
        x, w, dy = (torch.randn(*shape, device=device).to(dtype)
                    for shape in ((tokens, d_in), (d_out, d_in), (tokens, d_out)))
        per = config.num_hidden_layers * count
        seconds["forward"] += per * best_seconds(functools.partial(F.linear, x, w), repeats)
        seconds["input_grad"] += per * best_seconds(functools.partial(torch.mm, dy, w), repeats)
        seconds["weight_grad"] += per * best_seconds(functools.partial(torch.mm, dy.t(), x), repeats)
        flops += per * 2 * tokens * d_in * d_out  # per matmul kind
    out = {f"{k}_tflops": flops / v / 1e12 for k, v in seconds.items()}
    out["tokens"], out["dtype"] = tokens, dtype_name
    out["ceiling_fraction_of_matmul_peak"] = 3 * flops / sum(seconds.values()) / peak
    return out


def run_preset(preset: str, tokenizer, dataset, *, max_seq_len: int, batch_size: int, steps: int, warmup: int,
               precisions: list[str], machine: str, try_compile: bool, peaks: dict[str, float],
               profile: bool = False, compile_warmup: int = 30, checkpoint=lambda partial: None) -> dict:
    """One preset's arms; ``checkpoint(results_so_far)`` is called after each. ``machine`` is the
    precision ``scratchbert pretrain`` trains in here; ``peaks`` the ``torch.mm`` FLOP/s by precision."""
    import torch
    from transformers import BertConfig, BertForPreTraining, DataCollatorForLanguageModeling

    from scratchbert.modeling import build_config, flops_per_token, pretraining_model_class, resolve_attention
    from scratchbert.pretrain import PretrainConfig
    from scratchbert.pretraining_data import MlmNspCollator

    stock_dropout = BertConfig().hidden_dropout_prob  # Hugging Face's default, as the stock path trains
    default_dropout = PretrainConfig.dropout  # the field's default: what `pretrain` trains with
    config = build_config(preset, len(tokenizer), max_seq_len, dropout=stock_dropout)
    n = (max(warmup, compile_warmup if try_compile else 0) + steps) * batch_size
    data = dataset.shuffle(seed=0).select(range(min(n * 2, len(dataset))))
    mean_len = sum(data["length"]) / len(data)
    out: dict = {"batch_size": batch_size, "max_seq_len": max_seq_len, "vocab_size": config.vocab_size,
                 "dropout": {"stock": stock_dropout, "scratchbert": default_dropout}}

    torch.manual_seed(0)
    stock = BertForPreTraining(build_config(preset, len(tokenizer), max_seq_len, dropout=stock_dropout))
    stock_collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, pad_to_multiple_of=max_seq_len)
    try:
        out["stock"] = measure(stock, stock_collator, data.remove_columns(["length"]), batch_size=batch_size,
                               steps=steps, warmup=warmup, precision="fp32", fused=False, grouped=False)
    except Exception as e:  # out of memory at a GPU batch, say: report it, measure scratchbert anyway
        out["stock"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    else:
        stock_fpt = flops_per_token(config, max_seq_len, sparse_head=False)
        # Stock computes on every padded position: model FLOP/s counts the useful (real) tokens only.
        out["stock"]["model_tflops"] = out["stock"]["tokens_per_second"] * stock_fpt / 1e12
    del stock
    checkpoint(out)

    # scratchbert's defaults at each precision; then, at the last (fastest) precision, one
    # change at a time: the stock recipe's dropout (like for like with the stock arm), the
    # attention kernel that "auto" did not pick, glibc's default malloc behaviour (on a CPU,
    # pretrain keeps freed memory for reuse: scratchbert.allocator), and torch.compile when asked.
    def peak_of(precision: str) -> float:  # bf16 and fp16 arms against the bf16 peak
        return peaks["fp32" if precision == "fp32" else "bf16"]

    cpu = not torch.cuda.is_available()
    variants = [dict(precision=p, attention=resolve_attention("auto", p), compiled=False, keep_memory=True,
                     dropout=default_dropout) for p in precisions]
    defaults = variants[-1]  # the last precision's: each arm below changes one thing of it
    last, auto = defaults["precision"], defaults["attention"]
    if default_dropout != stock_dropout:
        variants.append(dict(defaults, dropout=stock_dropout))
    variants.append(dict(defaults, attention="sdpa" if auto == "eager" else "eager"))
    if cpu:
        variants.append(dict(defaults, keep_memory=False))
    if try_compile:
        variants.append(dict(defaults, compiled=True))
    # the machine's own matmul speed at a step's shapes (before the arms that may run long)
    out["matmuls"] = training_matmuls(config, tokens=int(batch_size * mean_len),
                                      dtype_name="float32" if last == "fp32" else "bfloat16", peak=peak_of(last))
    checkpoint(out)

    def profile_defaults() -> None:  # scratchbert's defaults once more, operator by operator
        torch.manual_seed(0)
        model = pretraining_model_class()(build_config(preset, len(tokenizer), max_seq_len, dropout=default_dropout,
                                                       attn_implementation=resolve_attention("auto", machine)))
        r = measure(model, MlmNspCollator(tokenizer, mlm_positions=True), data, batch_size=batch_size,
                    steps=min(steps, 5), warmup=warmup, precision=machine, fused=True, grouped=True,
                    remove_unused=False, keep_memory=True, profile=True)
        if "operators" in r:  # a CPU: the wall-clock breakdown goes into the JSON
            out["profile"] = dict(r["operators"], tokens_per_second=r["tokens_per_second"], steps=r["steps"])
            checkpoint(out)

    for v in variants:
        if v["compiled"] and profile:  # before the compiled arm, the one most likely to run long
            profile_defaults()
            profile = False
        name = (f"scratchbert_{v['precision']}"
                + (f"_{v['attention']}" if v["attention"] != resolve_attention("auto", v["precision"]) else "")
                + (f"_dropout{v['dropout']:g}" if v["dropout"] != default_dropout else "")
                + ("" if v["keep_memory"] else "_default_malloc") + ("_compiled" if v["compiled"] else ""))
        torch.manual_seed(0)
        model = pretraining_model_class()(build_config(preset, len(tokenizer), max_seq_len, dropout=v["dropout"],
                                                       attn_implementation=v["attention"]))
        try:
            # a compiled model recompiles as shapes change (row count, padded length): it warms up
            # longer, so that the timed steps measure its steady state, not its compiler
            r = measure(model, MlmNspCollator(tokenizer, mlm_positions=True), data, batch_size=batch_size,
                        steps=steps, warmup=max(warmup, compile_warmup) if v["compiled"] else warmup,
                        precision=v["precision"], fused=True, grouped=True,
                        compile_model=v["compiled"], remove_unused=False, keep_memory=v["keep_memory"])
        except Exception as e:  # torch.compile can fail on some setups: report, don't hide
            out[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            continue
        r["model_tflops"] = r["tokens_per_second"] * flops_per_token(config, int(mean_len)) / 1e12
        r["fraction_of_matmul_peak"] = r["model_tflops"] * 1e12 / peak_of(v["precision"])
        if "tokens_per_second" in out["stock"]:
            r["speedup_vs_stock"] = r["tokens_per_second"] / out["stock"]["tokens_per_second"]
        r["attention"], r["dropout"] = v["attention"], v["dropout"]
        out[name] = r
        checkpoint(out)
    best = max((v for k, v in out.items() if k.startswith("scratchbert_") and "speedup_vs_stock" in v),
               key=lambda v: v["tokens_per_second"], default={})
    if best:
        out["best_speedup_vs_stock"] = best["speedup_vs_stock"]
    default = out.get(f"scratchbert_{machine}", {})
    if "speedup_vs_stock" in default:  # what `scratchbert pretrain` does with no flags
        out["default_speedup_vs_stock"] = default["speedup_vs_stock"]
    if "fraction_of_matmul_peak" in default:
        out["default_fraction_of_matmul_peak"] = default["fraction_of_matmul_peak"]
    if profile:
        profile_defaults()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="tiny,base")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=None, help="examples per step at every preset (default: per preset and device)")
    p.add_argument("--compile", nargs="?", const="all", default="", metavar="PRESETS",
                   help="also measure torch.compile (at the given presets, comma-separated; all with no value)")
    p.add_argument("--compile-warmup", type=int, default=30,
                   help="warm-up steps of the compiled arms, which recompile as shapes change")
    p.add_argument("--profile", default="", metavar="PRESETS",
                   help="after the timed arms, profile a few steps of scratchbert's defaults at these presets "
                        "(a CPU: wall clock per operator, under 'profile' in the JSON; a GPU: torch.profiler's table on stderr)")
    p.add_argument("--partial", default=None, metavar="PATH",
                   help="write the results so far to PATH after every arm (for runs that may be cut short)")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "scratchbert-bench"))
    args = p.parse_args()
    require_shared_data()
    import torch

    from scratchbert.pretrain import resolve_precision
    from scratchbert.pretraining_data import load_pretraining_dataset
    from scratchbert.tokenizer import load_tokenizer

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tok_dir, data_dir, _ = prepared_data(work, max_seq_len=args.max_seq_len, valid=False)
    tokenizer = load_tokenizer(tok_dir)
    ds, _ = load_pretraining_dataset(data_dir)
    cuda = torch.cuda.is_available()
    machine = resolve_precision("auto")  # what `scratchbert pretrain` trains in here
    # a CPU without bf16 instructions would emulate bf16, far slower than fp32 (its bf16 peak
    # alone took 8 minutes to measure on an AVX2 machine): neither an arm nor a peak there
    precisions = ["bf16"] if cuda else ["fp32", "bf16"] if machine == "bf16" else ["fp32"]
    peaks = {p: matmul_peak("float32" if p == "fp32" else "bfloat16") for p in ("fp32", *precisions)}
    result = {"benchmark": "pretrain_throughput", "matmul_peak_tflops": {p: v / 1e12 for p, v in peaks.items()}}
    # per-device batch: on a GPU, batches big enough to fill it (base 256 x 128 tokens, a usual
    # per-GPU batch for BERT-base at length 128), within the memory the stock arm's fp32 logits
    # at every position need. On 2 CPU cores, larger batches did not pay at the small presets;
    # at base, each step also has a cost that does not grow with the batch (AdamW, clipping,
    # the bf16 copies of 110M weights and the fp32 copies of their gradients, the dense
    # 30,522 x 768 embedding gradient: ~0.3 s), which batch 64 spreads over 4x the tokens of
    # batch 16 (bf16, this benchmark's measure() in one process: 1,437 -> 1,705 tokens/s)
    batch = ({"nano": 512, "tiny": 512, "tiny4": 512, "mini": 256, "small": 256, "medium": 256, "base": 256} if cuda else
             {"nano": 64, "tiny": 64, "tiny4": 64, "mini": 32, "small": 32, "medium": 16, "base": 64})
    for preset in args.presets.split(","):
        bs = args.batch_size or batch.get(preset, 16)

        def checkpoint(partial: dict, preset=preset) -> None:
            if args.partial:
                Path(args.partial).write_text(json.dumps({**result, preset: partial}, indent=2, sort_keys=True))

        result[preset] = run_preset(preset, tokenizer, ds["train"], max_seq_len=args.max_seq_len, batch_size=bs,
                                    steps=args.steps, warmup=args.warmup, precisions=precisions,
                                    try_compile=args.compile == "all" or preset in args.compile.split(","),
                                    machine=machine, peaks=peaks,
                                    profile=preset in args.profile.split(","), compile_warmup=args.compile_warmup,
                                    checkpoint=checkpoint)
    emit(result)


if __name__ == "__main__":
    main()
