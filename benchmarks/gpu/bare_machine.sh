#!/usr/bin/env bash
# Setting up a GPU machine that has PyTorch and CUDA but no network, for benchmarks/gpu/run.sh.
# onnxruntime-gpu arrives as a wheel split into parts (`split -b 50M`), when one transfer to
# the machine can carry only part of it; its CUDA 13 libraries (cuBLAS, cuDNN 9, cuFFT, cuRAND,
# NVRTC) are the nvidia-* wheels that torch's CUDA 13 build already installed.
#
#   source benchmarks/gpu/bare_machine.sh
#   keep_part DIR        copy the wheel part(s) in DIR to $WHEEL_PARTS (outside the working tree)
#   install_ort          join the parts, check the wheel's SHA256, install it into $SITE
#   install_wheels DIR   other wheels carried whole (onnxsim, for the front end CI runs), into $SITE
#   install_vlc          vlc itself, editable, without dependencies (no index to fetch from)
#   activate             PYTHONPATH and PATH for the installed packages
WHEEL_PARTS="${WHEEL_PARTS:-/root/wheel-parts}"
SITE="${SITE_DIR:-/root/site}"

keep_part() { mkdir -p "$WHEEL_PARTS" && cp "$1"/* "$WHEEL_PARTS"/; }

install_ort() {
    [ -d "$SITE/onnxruntime" ] && return 0
    local wheel
    wheel="$WHEEL_PARTS/$(awk '{print $2}' "$WHEEL_PARTS/SHA256")"
    cat "$WHEEL_PARTS"/part.* > "$wheel"
    (cd "$WHEEL_PARTS" && sha256sum -c SHA256) || return 1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$wheel"
}

install_wheels() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$1"/*.whl
}

install_vlc() {
    python3 -c "import vlc.targets.torch" 2>/dev/null && return 0
    python3 -m pip install -q --no-deps --no-build-isolation -e . \
        || python3 -m pip install -q --no-deps --no-build-isolation .
}

activate() {
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    PATH="$(python3 -c 'import sys; print(sys.prefix)')/bin:$PATH"
    export PATH
}
