#!/usr/bin/env bash
# The GPU benchmark: the reference examples at full size on one CUDA GPU. PyTorch at its
# strongest (torch.compile's modes, compiled per batch size with static shapes; max-autotune,
# with autotuned kernels and CUDA graphs, by default) against vlc's onnxruntime CUDA path, plus
# torch eager and onnxruntime on the raw export. Every cell is timed the same way: inputs and
# outputs resident on the GPU, the host clock around each call, synchronised after it (every
# onnxruntime record also keeps its end-to-end time, transfers included, in settings.breakdown_ms).
# Records go to RESULTS (one JSON per cell).
#
#   [MACHINE=name] [PARTS="main torch raw profile"] [TORCH_MODES="max-autotune"] [BATCHES=1,32] \
#       [PRECISIONS=fp32,fp16] [BENCH_TIMEOUT=seconds] benchmarks/gpu/run.sh [RESULTS] [MODEL...]
#
# (defaults: benchmarks/results/gpu, all three models, all parts, each model's reference batch
# sizes). PARTS picks which sweeps run, so a GPU lease with a per-command time limit can take one
# model and part per command:
#   main   torch eager and vlc's onnxruntime CUDA path (normalized graph, the target's CUDA
#          passes, fp16 islands for ORT's kernels, IOBinding, CUDA graphs), at PRECISIONS
#   ort    vlc's onnxruntime CUDA path alone, fp16
#   torch  torch.compile at fp16 in each of TORCH_MODES (compile, reduce-overhead, max-autotune)
#   raw    onnxruntime on the raw exporter output with the same runtime settings
#   profile  the CUDA kernel profile of the first model
#
# Needs: vlc installed with a CUDA build of torch and onnxruntime-gpu (pip install .[ort-gpu]).
set -euo pipefail
RESULTS="${1:-benchmarks/results/gpu}"
shift || true
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(clip-vit-b32-image vilbert-vqa mobilevit-s)
TIMING=(--no-transfers --warmup 10 --iterations 50 --machine "${MACHINE:-$(hostname)}")  # MACHINE names it in reports
TORCH_MODES="${TORCH_MODES:-max-autotune}"
PRECISIONS="${PRECISIONS:-fp32,fp16}"

bench() {
    # a failed cell is recorded with its reason; keep measuring the others. BENCH_TIMEOUT (seconds)
    # interrupts one sweep that runs too long; the cells finished by then keep their records.
    ${BENCH_TIMEOUT:+timeout -s INT -k 30 "$BENCH_TIMEOUT"} vlc bench "$@" \
        || echo "run.sh: vlc bench $1 stopped or recorded failed cells (see the records)" >&2
}

batches() {
    if [ -n "${BATCHES:-}" ]; then echo "$BATCHES"; return; fi
    case "$1" in
        clip-vit-b32-image) echo 64,768,1024 ;;
        vilbert-vqa) echo 8,16,32,64,128,256 ;;
        mobilevit-s) echo 1,16,32 ;;
        *) echo "no reference batch sizes for $1" >&2; exit 2 ;;
    esac
}

PARTS="${PARTS:-main torch raw profile}"
wanted() { [[ " $PARTS " == *" $1 "* ]]; }

for model in "${MODELS[@]}"; do
    b=$(batches "$model")
    if wanted main; then
        bench "$model" --device cuda --targets torch,onnxruntime --precisions "$PRECISIONS" \
            --batch "$b" --results "$RESULTS" "${TIMING[@]}"
    fi
    if wanted ort; then
        bench "$model" --device cuda --targets onnxruntime --precisions fp16 \
            --batch "$b" --results "$RESULTS" "${TIMING[@]}"
    fi
    if wanted torch; then
        # one cell per mode and batch size; each compiles its own static-shape graph first
        modes=$(for m in $TORCH_MODES; do printf 'torch:mode=%s,' "$m"; done)
        bench "$model" --device cuda --targets "${modes%,}" --precisions fp16 \
            --batch "$b" --results "$RESULTS" "${TIMING[@]}"
    fi
    if wanted raw; then
        # the raw exporter output on the same runtime settings: what vlc's graph work adds
        bench "$model" --device cuda --graph raw --targets onnxruntime:fusions=false:islands=all \
            --precisions fp16 --batch "$b" --results "$RESULTS" "${TIMING[@]}"
    fi
done
if wanted profile; then
    python3 benchmarks/gpu/kernel_profile.py "${MODELS[0]}" --ceilings --out "$RESULTS/kernel-profile"
fi
