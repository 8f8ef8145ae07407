#!/usr/bin/env bash
# Every registered method on every toy and on a linear hyper-cleaning run, with `hypertape
# compare` (each method's defaults and the problem's paper rows): one table per problem in OUT
# (the README's "every method" tables come from here). HC="NAME=VALUE ..." sets the hyper-cleaning
# run's problem settings; UL / LL its iterations. TOYS: the toys to run; SKIP_HC=1: no
# hyper-cleaning.
set -euo pipefail
cd "$(dirname "$0")/.."
H=${HYPERTAPE:-build/tools/hypertape}
OUT=${OUT:-build/results/methods}
HC=${HC:-"n_train=2000 n_val=2000"}
UL=${UL:-30}
LL=${LL:-50}
mkdir -p "$OUT"
methods=$("$H" list | awk '/^methods:/{m=1; next} /^dynamics:/{m=0} m {print $1}' | paste -sd, -)
for toy in ${TOYS:-counterexample llc lls nonconvex sin coreset minimax degenerate pl quadratic}; do
    echo "== $toy"
    "$H" compare "$toy" --methods "$methods" | tee "$OUT/$toy.txt"
done
sets=()
for s in $HC; do sets+=(--set "$s"); done
[ "${SKIP_HC:-0}" = 1 ] && exit 0
echo "== hyperclean ($HC, $UL UL iterations of $LL LL steps where a method has them)"
# ll_iters is not every method's setting: compare refuses an option no method has, and applies it
# to those that have it. fhg is left out: x has n_train entries here, and forward mode takes a
# Jacobian-vector product per entry of x at each LL step (it is for small x: bench fhg).
hc_methods=$(echo "$methods" | tr , '\n' | grep -vx fhg | paste -sd, -)
"$H" compare hyperclean "${sets[@]}" --ul-iters "$UL" --ll-iters "$LL" --methods "$hc_methods" | tee "$OUT/hyperclean.txt"
