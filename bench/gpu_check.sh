#!/usr/bin/env bash
# The GPU run of bench/gpu_check.py, from the repository root on the GPU machine (one H100, no network):
# installs the wheels `python bench/gpu_check.py --prepare` carried in .gpu/whl (into /tmp/site, no
# dependencies resolved: the image has the rest), then runs the check with --device cuda, writing to
# $OUT (report.md, results.json, tests.log, bench.log, env.json, console.log, pip.log).
# Extra arguments go to gpu_check.py, e.g. `bash bench/gpu_check.sh --no_tests --variants trl,lora`.
set -u
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
    pip=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site)
    if ! "${pip[@]}" .gpu/whl/*.whl >"$OUT/pip.log" 2>&1; then
        # one wheel that does not fit this Python stops them all: take them one by one
        for w in .gpu/whl/*.whl; do
            "${pip[@]}" "$w" >>"$OUT/pip.log" 2>&1 || echo "wheel not installed: $w (pip.log)" | tee -a "$OUT/pip.log"
        done
    fi
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 bench/gpu_check.py --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/console.log"
