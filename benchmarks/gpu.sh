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
# take; time-to-quality's minutes shrink to fit, at most TTQ_MINUTES each; 0 skips it), PRESETS, STEPS,
# COMPILE (presets to measure compiled), PROFILE (presets to profile), SCRATCHBERT_SHARED_DATA (the data folder: enwiki/
# train.txt and valid.txt, ../shared/data by default), WORKDIR (benchmark cache: a trained
# tokenizer left there is reused). Wheels in .whl/ (packages the machine lacks) are
# installed into /tmp/site first.
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

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi

# fail fast (before any long stage) when an import or the GPU is missing
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" - <<'EOF'
import importlib
for m in ("torch", "transformers", "tokenizers", "datasets", "accelerate", "pyarrow", "numpy"):
    print(m, importlib.import_module(m).__version__)
import torch
import scratchbert.pretrain, scratchbert.evaluation  # noqa: F401
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
EOF
} 2>&1 | tee "$OUT/env.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "environment check failed"; exit 1; }

left() { echo $(( DEADLINE_S - ($(date +%s) - start) )); }

echo "== pretrain_throughput ($(left) s left)"
reserve=$([ "$TTQ_MINUTES" = 0 ] && echo 5 || echo 150)  # seconds kept for time_to_quality
timeout $(( $(left) - reserve )) "$PY" benchmarks/pretrain_throughput.py --presets "$PRESETS" --steps "$STEPS" \
  --compile "$COMPILE" --profile "$PROFILE" --partial "$OUT/throughput.partial.json" --workdir "$WORKDIR" \
  >"$OUT/throughput.json" 2>"$OUT/throughput.log"
echo "rc $?"; tail -n 3 "$OUT/throughput.log"

# two recipes one after the other, each: minutes of training + ~25 s of loading and evaluation
[ "$TTQ_MINUTES" = 0 ] || {
minutes=$("$PY" -c "print(round(max(0.5, min($TTQ_MINUTES, ($(left) - 60) / 2 / 60)), 2))")
echo "== time_to_quality, $minutes minutes each ($(left) s left)"
timeout $(( $(left) - 5 )) "$PY" benchmarks/time_to_quality.py --minutes "$minutes" --workdir "$WORKDIR" \
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
