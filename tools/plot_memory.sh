#!/usr/bin/env bash
# The memory-time figure of `hypertape bench memory`: the checkpointed sweep's time (y) against
# its memory budget (x, log scale) at n = 10^4, K = 10^4, with the sweep over stored iterates as
# a line. Reads a saved output of the benchmark, or runs it.
#   tools/plot_memory.sh [--from=FILE] [--out=FILE.png] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
H=${HYPERTAPE:-build/tools/hypertape}
OUT=build/results/memory.png
FROM=
QUICK=
for arg in "$@"; do
    case "$arg" in
    --from=*) FROM=${arg#--from=} ;;
    --out=*) OUT=${arg#--out=} ;;
    --quick) QUICK=--quick ;;
    *) echo "usage: tools/plot_memory.sh [--from=FILE] [--out=FILE.png] [--quick]" >&2; exit 2 ;;
    esac
done
mkdir -p "$(dirname "$OUT")"
DATA=$(mktemp)
trap 'rm -f "$DATA"' EXIT
if [ -z "$FROM" ]; then
    FROM=${OUT%.png}.txt
    "$H" bench memory $QUICK | tee "$FROM"
fi
# rows: curve budget_MiB slots fwd_steps recomp/K cpu_s x_stored peak_RSS_MB wall_s (budget 0: stored)
awk '$1 == "curve" && $3 ~ /^[0-9]+$/' "$FROM" > "$DATA"
SIZE=$(grep -o '^(a) n = [0-9]*, K = [0-9]*' "$FROM" | sed 's/^(a) //')
STORED=$(awk '$2 == "0.00" { print $6 }' "$DATA")
STORED_MB=$(awk '$2 == "0.00" { print $8 }' "$DATA")
gnuplot <<GP
set terminal pngcairo size 800,520
set output "$OUT"
set title "RHG, tridiagonal quadratic, $SIZE: binomial checkpointing"
set xlabel "memory budget for the sweep's states (MiB, log scale)"
set ylabel "CPU time of one hypergradient (s)"
set logscale x
set key top right
set grid
plot "$DATA" using (\$3 > 0 ? \$2 : 1/0):6:(sprintf("c=%d", \$3)) with labels offset 0,1 notitle, \
     "$DATA" using (\$3 > 0 ? \$2 : 1/0):6 with linespoints pt 7 title "checkpointed (c slots)", \
     $STORED title sprintf("every iterate stored (%s MB peak RSS)", "$STORED_MB") with lines dt 2
GP
echo "wrote $OUT"
