#!/usr/bin/env bash
# The function benchmark and the expert pass on CUDA: fp32 against bf16 and fp16 autocast, batch 1
# (one frame per request), p50/p95 latency and frames/s, and each dtype's decisions against fp32's on
# the same persons (logit deltas, persons on the other side of thr). Under the benchmark protocol
# (bench/README.md); finishes in under 5 minutes; all figures go to one file, written whole or not at all.
#
#   bench/gpu.sh --out FILE [--allow-noisy]                 # on a GPU machine
#   DEVICE=cpu bench/gpu.sh --dry-run --out FILE            # tiny sizes on CPU: keeps the script correct
#
# DEVICE (default cuda) is the torch device; PYTHON the interpreter (default .venv/bin/python, else
# python3). On CPU fp16 is skipped (printed): CPU autocast to float16 is not what a GPU runs.
set -euo pipefail
cd "$(dirname "$0")/.."

out="" dry=0 noisy=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:-}"; shift 2 || { echo "gpu.sh: --out needs a FILE" >&2; exit 2; } ;;
    --dry-run) dry=1; shift ;;
    --allow-noisy) noisy=(--allow-noisy); shift ;;
    *) echo "gpu.sh: unknown argument $1 (usage: bench/gpu.sh --out FILE [--dry-run] [--allow-noisy])" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "gpu.sh: --out FILE is required" >&2; exit 2; }
device="${DEVICE:-cuda}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
if [[ "$device" == cuda* ]] && ! "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu.sh: DEVICE=$device but torch sees no CUDA device here (DEVICE=cpu --dry-run checks the script)" >&2
  exit 2
fi

dtypes=fp32,bf16,fp16
expert_variants=eager,bf16,fp16
skipped=""
if [ "$device" = cpu ]; then
  dtypes=fp32,bf16
  expert_variants=eager,bf16
  skipped="# gpu.sh: fp16 skipped on cpu: CPU autocast to float16 is not what a GPU runs (bf16 is compared)"
fi
if [ "$dry" = 1 ]; then  # tiny: the same code paths in seconds
  function_args=(--frames 2 --persons 1,2 --frame-size 160x96 --expert-depth 1
                 --detector-arch fasterrcnn_mobilenet_v3_large_320_fpn --detector-min-size 64 --detector-max-size 96)
  expert_args=(--frames 3 --persons 2 --warmup 1 --frame-size 160x96 --expert-depth 1)
else  # 1280x720, the default detector at its own size: about a minute each on a GPU
  function_args=(--frames 50 --persons 1,5)
  expert_args=(--frames 100 --persons 5 --warmup 5)
fi

tmp="$(mktemp "${out}.tmp.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
started=$SECONDS
set +e
{
  set -e  # the first failing step ends the run
  echo "# gpu.sh: device $device, dry run $dry, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  if [[ "$device" == cuda* ]]; then
    "$python" -c 'import torch; print("# gpu.sh:", torch.cuda.get_device_name(0), "CUDA", torch.version.cuda)'
  fi
  [ -z "$skipped" ] || echo "$skipped"
  echo "# gpu.sh: function benchmark, autocast $dtypes"
  timeout 140 "$python" bench/bench_function.py --device "$device" --autocast "$dtypes" "${function_args[@]}" "${noisy[@]}"
  echo "# gpu.sh: expert pass, variants $expert_variants"
  timeout 140 "$python" bench/bench_expert.py --device "$device" --variants "$expert_variants" "${expert_args[@]}" "${noisy[@]}"
  echo "# gpu.sh: done in $((SECONDS - started)) s"
} 2>&1 | tee "$tmp"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || { echo "gpu.sh: a benchmark failed (exit $status); $out not written" >&2; exit "$status"; }
mv "$tmp" "$out"
trap - EXIT
