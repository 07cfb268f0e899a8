#!/usr/bin/env bash
# bench/gpu.py on the lent GPU machine, in one call of the device tool:
#   run  command: bash bench/gpu.sh   carry: [".whl", ".data"]   timeout_s: 480
# Installs the carried wheels (.whl/, see bench/gpu.py's docstring) into /tmp/site, then runs
# bench/gpu.py with any arguments given here; all output also goes to $OUT/gpu.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$OUT"
site=/tmp/site
install() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$@"
}
{
    echo "gpu.sh: $(date -u +%FT%TZ) $(python3 --version) at $(command -v python3)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    install .whl/*.whl || echo "gpu.sh: installing the wheels failed"
    export PYTHONPATH=$site:$PWD
    if ! python3 -c "import datasets" 2>/dev/null; then
        echo "gpu.sh: 'import datasets' failed with the image's packages; adding .whl/fallback"
        install .whl/fallback/*.whl || echo "gpu.sh: installing the fallback wheels failed"
        python3 -c "import datasets" || echo "gpu.sh: datasets still fails: ours will fail"
    fi
    if ! python3 -c "import onmt.bin.train" >/dev/null 2>&1; then
        echo "gpu.sh: OpenNMT-py does not import here: $(python3 -c 'import onmt.bin.train' 2>&1 | tail -1)"
    fi
    PYTHONUNBUFFERED=1 python3 -m bench.gpu --out "$OUT" "$@"
} 2>&1 | tee "$OUT/gpu.log"
