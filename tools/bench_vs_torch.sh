#!/bin/sh
# hypertape against PyTorch on this machine: the issue's reference cases (RHG on the quadratic
# with n = 10 and 1000, one UL iteration of hyper-cleaning with RHG and CG on the linear model
# and with RHG on the 2-layer one, hidden 300, ConvNet-4 forward and backward), PyTorch's times
# measured by tools/bench_torch.py right before each `hypertape bench reference` run, for
# ROUNDS rounds, so both see the same load on a shared machine; each round prints the ratios,
# and with them the like-for-like lines: f from general products (4 passes per step, as PyTorch's
# autograd makes) and hyper-cleaning on doubles with every product on cblas (as torch.matmul).
# Needs PyTorch 1.13 from Debian's packages (apt-get install python3-torch) and a build in
# build/. Usage: tools/bench_vs_torch.sh [ROUNDS (3)] [--quick]
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-3}
quick=${2:-}
case $rounds in ''|*[!0-9]*) echo "bench_vs_torch.sh: ROUNDS must be a number, got '$rounds'" >&2; exit 2;; esac
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
    { echo "bench_vs_torch.sh: PyTorch is not installed (apt-get install python3-torch)" >&2; exit 2; }
[ -x build/tools/hypertape ] ||
    { echo "bench_vs_torch.sh: build/tools/hypertape is missing (meson setup build && ninja -C build)" >&2; exit 2; }
times=$(mktemp)
trap 'rm -f "$times"' EXIT
r=1
while [ "$r" -le "$rounds" ]; do
    echo "== round $r of $rounds"
    /usr/bin/python3 tools/bench_torch.py $quick --out "$times"
    build/tools/hypertape bench reference $quick --torch "$times" |
        grep -E '^\((a|d|f)\)|general products|all on cblas|floor|budget of before|dgemm peak|CPU seconds|skip X1|sparse=0|strips=0|spin 0'
    r=$((r + 1))
done
