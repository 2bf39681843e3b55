#!/usr/bin/env bash
# The GPU benchmark: the reference examples at full size on one CUDA GPU, torch eager fp32/fp16,
# torch.compile fp16, and onnxruntime CUDA fp32/fp16 on vlc's normalized graph and on the raw
# export, at the reference batch sizes, timed with inputs and outputs resident on the GPU (every
# onnxruntime record also keeps its end-to-end time, transfers included, in settings.breakdown_ms).
# Records go to RESULTS (one JSON per cell).
#
#   [MACHINE=name] [PARTS="main compile raw profile"] benchmarks/gpu/run.sh [RESULTS] [MODEL...]
#
# (defaults: benchmarks/results/gpu, all three models, all parts). PARTS picks which sweeps run, so
# a GPU lease with a per-command time limit can take one model and part per command.
#
# Needs: vlc installed with a CUDA build of torch and onnxruntime-gpu (pip install .[ort-gpu]).
set -euo pipefail
RESULTS="${1:-benchmarks/results/gpu}"
shift || true
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(clip-vit-b32-image vilbert-vqa mobilevit-s)
TIMING=(--no-transfers --warmup 5 --iterations 20 --machine "${MACHINE:-$(hostname)}")  # MACHINE names it in reports

bench() {
    # a failed cell is recorded with its reason; keep measuring the others
    vlc bench "$@" || echo "run.sh: vlc bench $1 recorded failed cells (see the records)" >&2
}

batches() {
    case "$1" in
        clip-vit-b32-image) echo 64,768,1024 ;;
        vilbert-vqa) echo 8,16,32,64,128,256 ;;
        mobilevit-s) echo 1,16,32 ;;
        *) echo "no reference batch sizes for $1" >&2; exit 2 ;;
    esac
}

PARTS="${PARTS:-main compile raw profile}"
wanted() { [[ " $PARTS " == *" $1 "* ]]; }

for model in "${MODELS[@]}"; do
    b=$(batches "$model")
    if wanted main; then
        # PyTorch eager fp32/fp16 and vlc's onnxruntime CUDA path (normalized graph, the target's
        # CUDA passes, fp16 islands for ORT's kernels, IOBinding, CUDA graphs)
        bench "$model" --device cuda --targets torch,onnxruntime --precisions fp32,fp16 \
            --batch "$b" --results "$RESULTS" "${TIMING[@]}"
    fi
    if wanted compile; then
        # the strongest PyTorch baseline: torch.compile at fp16
        bench "$model" --device cuda --targets torch:mode=compile --precisions fp16 \
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
