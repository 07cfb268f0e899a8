#!/usr/bin/env bash
# python -m bench.gpu on a GPU machine without network, in one call (about 7.5 minutes with the
# default --deadline 7): installs the wheels carried in .whl/ into /tmp/site, then runs bench.gpu
# with any arguments given here; all output also goes to $OUT/gpu.log. Carry .whl/ and .data/
# (Multi30k's six .gz files in .data/multi30k/). The wheels are what an image with python 3.12
# and torch lacks (datasets' dill and multiprocess; OpenNMT-py 3.0.4 and its configargparse,
# pyonmttok and rapidfuzz), fetched once beforehand:
#   opts='--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any'
#   python3 -m pip download $opts -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
#       OpenNMT-py==3.0.4 ConfigArgParse==1.9.0 pyonmttok==1.38.1 rapidfuzz==3.14.6
#   python3 -m pip download $opts -d .whl/fallback fsspec==2026.9.0  # if datasets fails without
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
