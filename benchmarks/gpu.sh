#!/usr/bin/env bash
# The GPU check of the pretraining benchmarks, as one script that fits a short lease of a
# GPU machine: throughput and model-FLOPs utilisation (scratchbert vs the stock path, tiny
# and base, torch.compile measured at base), then the article's recipe vs scratchbert's
# for the same minutes. Every stage writes its JSON and log under $OUT as it ends, so a run
# cut short still returns what it finished.
#
#   OUT=/tmp/gpu-out bash benchmarks/gpu.sh            # from the repository root
#
# Environment (all optional): OUT (results folder), DEADLINE_S (seconds the whole script may
# take; time-to-quality's minutes shrink to fit, at most TTQ_MINUTES each; 0 skips it),
# PRESETS, STEPS, COMPILE (presets to measure compiled), PROFILE (presets to profile),
# SCRATCHBERT_SHARED_DATA (the data folder: enwiki/train.txt and valid.txt, ../shared/data by
# default), WORKDIR (benchmark cache: a trained tokenizer left there is reused), TTQ_PRESET
# and TTQ_FLAGS (scratchbert's time-to-quality arm: its model size, default tiny, and other
# `scratchbert pretrain` flags, e.g. '--batch-size 256'). Wheels in .whl/ (packages the machine lacks)
# are installed into /tmp/site first.
#
# For a machine with no network and no ../shared (how the README's GPU numbers were made):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl transformers==5.23.0 tokenizers==0.23.3 \
#     datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 regex==2026.11.19
#   mkdir -p .gpu/data/enwiki .gpu/bench      # both folders ignored by git (.git/info/exclude)
#   head -c 11500000 ../shared/data/enwiki/train.txt | sed '$d' > .gpu/data/enwiki/train.txt
#   head -c 2500000 ../shared/data/enwiki/valid.txt | sed '$d' > .gpu/data/enwiki/valid.txt
#   cp -r /tmp/scratchbert-bench/tok-30522-11000000 .gpu/bench/   # the same vocabulary as here
#   then on the machine: SCRATCHBERT_SHARED_DATA=$PWD/.gpu/data WORKDIR=$PWD/.gpu/bench bash benchmarks/gpu.sh
set -uo pipefail
start=$(date +%s)
OUT=${OUT:-/tmp/scratchbert-gpu}
DEADLINE_S=${DEADLINE_S:-540}
TTQ_MINUTES=${TTQ_MINUTES:-2}
PRESETS=${PRESETS:-tiny,base}
STEPS=${STEPS:-20}
COMPILE=${COMPILE:-base}
PROFILE=${PROFILE:-base}
WORKDIR=${WORKDIR:-/tmp/scratchbert-bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SCRATCHBERT_TENSORBOARD=0 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}

# the checkout's code, installed or not: src/ is the library; pipelines/ is imported (by
# benchmarks/common.py) under its installed name, scratchbert_pipelines, hence a link to it
links=$(mktemp -d)
trap 'rm -rf "$links"' EXIT
ln -s "$PWD/pipelines" "$links/scratchbert_pipelines"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src:$links${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD/src:$links${PYTHONPATH:+:$PYTHONPATH}
fi

# fail fast (before any long stage) when an import or the GPU is missing
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" - <<'EOF'
import importlib
for m in ("torch", "transformers", "tokenizers", "datasets", "accelerate", "pyarrow", "numpy"):
    print(m, importlib.import_module(m).__version__)
import torch
import scratchbert.pretrain, scratchbert.evaluation, scratchbert_pipelines.local_run  # noqa: F401
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
EOF
} 2>&1 | tee "$OUT/env.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "environment check failed"; exit 1; }

left() { echo $(( DEADLINE_S - ($(date +%s) - start) )); }

echo "== pretrain_throughput ($(left) s left)"
reserve=$([ "$TTQ_MINUTES" = 0 ] && echo 5 || echo 150)  # seconds kept for time_to_quality
timeout $(( $(left) - reserve > 10 ? $(left) - reserve : 10 )) "$PY" benchmarks/pretrain_throughput.py --presets "$PRESETS" --steps "$STEPS" \
  --compile "$COMPILE" --profile "$PROFILE" --partial "$OUT/throughput.partial.json" --workdir "$WORKDIR" \
  >"$OUT/throughput.json" 2>"$OUT/throughput.log"
echo "rc $?"; tail -n 3 "$OUT/throughput.log"

# two recipes one after the other, each: minutes of training + ~25 s of loading and evaluation
[ "$TTQ_MINUTES" = 0 ] || {
minutes=$("$PY" -c "print(round(max(0.5, min($TTQ_MINUTES, ($(left) - 60) / 2 / 60)), 2))")
echo "== time_to_quality, $minutes minutes each ($(left) s left)"
timeout $(( $(left) - 5 )) "$PY" benchmarks/time_to_quality.py --minutes "$minutes" --workdir "$WORKDIR" \
  --preset "${TTQ_PRESET:-tiny}" --pretrain-flags="${TTQ_FLAGS:-}" \
  >"$OUT/time_to_quality.json" 2>"$OUT/time_to_quality.log"
echo "rc $?"
}

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return {}
t = load("throughput.json") or load("throughput.partial.json")
print("matmul peak TFLOP/s", t.get("matmul_peak_tflops"))
for preset, r in t.items():
    if not isinstance(r, dict) or "batch_size" not in r:
        continue
    for k, v in r.items():
        if isinstance(v, dict) and ("tokens_per_second" in v or "error" in v):
            print(f"{preset:5} {k:34} {v.get('tokens_per_second', 0):>12,.0f} tok/s  "
                  f"{v.get('model_tflops', 0):7.1f} TFLOP/s  MFU {v.get('fraction_of_matmul_peak', 0):.3f}  {v.get('error', '')}")
    if "matmuls" in r:
        print(preset, "matmuls", {k: round(v, 3) if isinstance(v, float) else v for k, v in r["matmuls"].items()})
q = load("time_to_quality.json")
for arm in ("scratchbert", "article"):
    a = q.get(arm, {})
    print(arm, {k: a.get(k) for k in ("steps", "tokens_per_second", "mlm_accuracy", "nsp_accuracy", "perplexity")})
EOF
echo "total $(( $(date +%s) - start )) s"
