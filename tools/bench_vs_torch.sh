#!/bin/sh
# hypertape against PyTorch on this machine: the issue's reference cases (RHG on the quadratic
# with n = 10 and 1000, one UL iteration of hyper-cleaning with RHG and CG on the linear model
# and with RHG on the 2-layer one, hidden 300, ConvNet-4 forward and backward), PyTorch's times
# measured by tools/bench_torch.py right before each `hypertape bench reference` run and again
# right after it, for ROUNDS rounds, so both see the same load on a shared machine; each round
# prints the ratios (against the time before, and then against both and their mean),
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
after=$(mktemp)
out=$(mktemp)
trap 'rm -f "$times" "$after" "$out"' EXIT

# hypertape's time of each case (from its output, $3) against PyTorch's before ($1) and after ($2)
# it, both "case value" files of bench_torch.py: a host that changed speed meanwhile shows as two
# ratios far apart.
bracket() {
    awk -v A="$1" -v B="$2" '
        function num(s) { sub(/^[^:]*: /, "", s); return s + 0 }
        BEGIN {
            while ((getline l < A) > 0) { split(l, f, " "); a[f[1]] = f[2] }
            while ((getline l < B) > 0) { split(l, f, " "); b[f[1]] = f[2] }
            n = split("quad10_ms quad1000_ms hc_rhg_s hc_cg_s hc_mlp_rhg_s convnet4_s", key, " ")
            split("RHG n = 10|RHG n = 1000|linear RHG|linear CG|2-layer RHG|ConvNet-4", name, "|")
        }
        /^\(a\) RHG hypergradient.* n = 10: / { h["quad10_ms"] = num($0) }
        /^\(a\) RHG hypergradient.* n = 1000: / { h["quad1000_ms"] = num($0) }
        /^\(d\) hyper-cleaning 5000 x 784 x 10, linear, rhg / { h["hc_rhg_s"] = num($0) }
        /^\(d\) hyper-cleaning 5000 x 784 x 10, linear, cg / { h["hc_cg_s"] = num($0) }
        /^\(d\) hyper-cleaning 5000 x 784 x 300 x 10, 2 layers .*, rhg / { h["hc_mlp_rhg_s"] = num($0) }
        /^\(f\) ConvNet-4 forward \+ backward.*float64: / { h["convnet4_s"] = num($0) }
        END {
            print "PyTorch before and after hypertape: hypertape faster by"
            for (i = 1; i <= n; i++) {
                k = key[i]
                if (!(h[k] > 0 && a[k] > 0 && b[k] > 0)) continue
                printf "    %s: %.2fx and %.2fx (%.2fx against their mean; PyTorch %g then %g, hypertape %g)\n",
                       name[i], a[k] / h[k], b[k] / h[k], (a[k] + b[k]) / 2 / h[k], a[k], b[k], h[k]
            }
        }' "$3"
}

r=1
while [ "$r" -le "$rounds" ]; do
    echo "== round $r of $rounds"
    /usr/bin/python3 tools/bench_torch.py $quick --out "$times"
    build/tools/hypertape bench reference $quick --torch "$times" > "$out" ||
        { echo "bench_vs_torch.sh: hypertape bench failed (exit $?)" >&2; exit 2; }
    grep -E '^\((a|d|f)\)|general products|all on cblas|floor|budget of before|dgemm peak|CPU seconds|skip X1|sparse=0|strips=0|spin 0' "$out"
    /usr/bin/python3 tools/bench_torch.py $quick --out "$after" > /dev/null
    bracket "$times" "$after" "$out"
    r=$((r + 1))
done
