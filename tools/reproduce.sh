#!/usr/bin/env bash
# The papers' experiments with `hypertape compare`: every toy and a hyper-cleaning run, one table
# (stdout and OUT/NAME.txt) and one convergence figure (OUT/NAME.png) each. The default is the
# short version the README's first command runs (a few minutes on 2 cores); --full runs
# hyper-cleaning with the paper-scale iteration counts.
set -euo pipefail
cd "$(dirname "$0")/.."
H=${HYPERTAPE:-build/tools/hypertape}
OUT=build/results
FULL=0
for arg in "$@"; do
    case "$arg" in
    --full) FULL=1 ;;
    --out=*) OUT=${arg#--out=} ;;
    *) echo "usage: tools/reproduce.sh [--full] [--out=DIR]" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"

run() { # name, compare arguments...
    local name=$1
    shift
    echo "== $name: hypertape compare $*"
    "$H" compare "$@" --plot "$OUT/$name.png" | tee "$OUT/$name.txt"
}

# BDA Example 1: RHG cannot pass x = 0.5 from y0 = 0; BDA approaches x* = 1
run counterexample counterexample --methods rhg,bda
run counterexample-y2 counterexample --methods rhg,bda --start-index 1
# AIT Eq. 18 (LLC): AIT_C converges, faster than BDA; RHG, CG, Neumann do not reach x* = e
run llc llc --methods rhg,cg,neumann,bda,ait,aitp
# AIT Eq. 19 (LLS) from the bad start: IA and Nesterov speed up RHG
run lls lls --methods rhg,rhg+ia,rhg:nesterov+ia
# AIT Eq. 20 (non-convex LL) from both starts: AIT_NC (IA + PTT) reaches x*, the others stay local
for s in 0 1; do
    run nonconvex-start$s nonconvex --start-index $s --methods rhg,cg,neumann,bda,bvfim,ait,ait:accel
done
# BVFIM Eq. 30 with a = 0 and 2 from both starts
for a in 0 2; do
    for s in 0 1; do
        run sin-a$a-start$s sin --set a=$a --start-index $s --methods rhg,cg,bvfim
    done
done
# BOME's toys
run coreset coreset --methods bome
run minimax minimax --methods bome
run degenerate degenerate --methods bome
# GALET Example 1 from two starts
for s in 0 1; do
    run pl-start$s pl --start-index $s --methods galet
done
# Data hyper-cleaning on FashionMNIST (linear model): all methods, brief unless --full
if [ "$FULL" = 1 ]; then
    run hyperclean-linear hyperclean --methods rhg,trhg,cg,neumann,bda,ait,aitp,bvfim,bome,galet
    run hyperclean-mlp hyperclean --set model=mlp --methods rhg,trhg,cg,neumann,bda,ait,bvfim,bome,galet
    # AIT_P on the MLP with its MLP settings (models/hyperclean.c: the prior pretrained at the LL
    # step, z's Adam step 0.001)
    run hyperclean-mlp-aitp hyperclean --set model=mlp --set pretrain_lr=0.3 --lr-z 0.001 --methods aitp
else
    run hyperclean-linear hyperclean --ul-iters 10 --ll-iters 30 --methods rhg,cg,ait,bome,galet
fi
echo "tables and figures in $OUT"
