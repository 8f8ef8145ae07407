#!/usr/bin/env bash
# The papers' experiments with `hypertape compare`: every toy and a hyper-cleaning run, one table
# (stdout and OUT/NAME.txt) and one convergence figure (OUT/NAME.png) each; BDA's x as K grows;
# the GAN of AIT Table 6 (a table of fd, js, modes and a scatter figure like its Fig. 10) and the
# architecture search of AIT Table 5. The default is the short version the README's first command
# runs (a few minutes on 2 cores; the GAN and NAS runs shortened); --full runs everything at the
# papers' scale (the models' paper rows; the GAN over seeds 0, 1, 2, mean +- std) and lists the
# time of each part.
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

SECONDS=0
PART_START=0
TIMES=""
part() { # closes the previous part's timing, names the next
    [ -n "${PART:-}" ] && TIMES="$TIMES$(printf '%-16s %6d s' "$PART" $((SECONDS - PART_START)))\n"
    PART=${1:-}
    PART_START=$SECONDS
}
field() { # a number from a one-line JSON report: field NAME < report
    sed -n "s/.*\"$1\": \([^,}]*\).*/\1/p"
}

run() { # name, compare arguments...
    local name=$1
    shift
    echo "== $name: hypertape compare $*"
    "$H" compare "$@" --plot "$OUT/$name.png" | tee "$OUT/$name.txt"
}

part toys
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
# BDA Example 1 as K grows: x is the minimizer of the K-step problem, tending to x* = 1
part bda-K
KS="16 64 256 1024"
echo "== BDA's x on counterexample as K grows"
{
    echo "K x"
    for K in $KS; do echo "$K $("$H" run counterexample --method bda --ll-iters "$K" --json | field x | tr -d '[]')"; done
} | tee "$OUT/bda-K.txt"

# AIT Table 6 / Fig. 10: the GAN on the pentagram; G is the UL, D the LL. vgan = alto, wgan = alto
# on the clipped critic's loss, ugan = rhg (warm-started, unrolled D), ait = AIT's PTT on the
# warm-started D (no IA); each method's K, D step and T are the problem's paper rows (README:
# vgan and wgan T = 2000, ugan 8000, ait 10000; about 40 s of CPU per 1000 iterations of ugan or
# ait). The short version runs seed 0 for 300 iterations (far from the paper rows' result).
part gan
GAN_METHODS="vgan:--method alto|wgan:--method alto --set loss=wgan --ll-iters 5|ugan:--method rhg|ait:--method ait"
SEEDS="0"
GAN_SHORT="--ul-iters 300"
[ "$FULL" = 1 ] && SEEDS="0 1 2" && GAN_SHORT=""
echo "== pentagram GAN (AIT Table 6): fd js modes per seed, then mean std"
{
    echo "method seed fd js modes"
    IFS='|'
    for run_args in $GAN_METHODS; do
        IFS=' '
        name=${run_args%%:*}
        for s in $SEEDS; do
            # shellcheck disable=SC2086
            rep=$("$H" run pentagram ${run_args#*:} --set seed="$s" --set samples="$OUT/gan-$name-seed$s.txt" $GAN_SHORT --json)
            echo "$name $s $(field fd <<<"$rep") $(field js <<<"$rep") $(field modes <<<"$rep")"
        done
        IFS='|'
    done
    IFS=' '
} | tee "$OUT/gan.txt"
awk 'NR > 1 { n[$1]++; for (j = 3; j <= 5; j++) { s[$1, j] += $j; q[$1, j] += $j * $j } }
     END { print "method fd js modes (mean std over seeds)"
           for (m in n) { line = m
               for (j = 3; j <= 5; j++) { mu = s[m, j] / n[m]; v = q[m, j] / n[m] - mu * mu
                   line = line sprintf(" %.3f %.3f", mu, n[m] > 1 ? sqrt((v > 0 ? v : 0) * n[m] / (n[m] - 1)) : 0) }
               print line } }' "$OUT/gan.txt" | tee "$OUT/gan-mean.txt"
if command -v gnuplot >/dev/null; then
    gnuplot -e "set terminal pngcairo size 1600,420; set output '$OUT/gan.png';
        set multiplot layout 1,4; set size ratio -1; set xrange [-10:10]; set yrange [-10:10]; unset key;
        do for [m in 'vgan wgan ugan ait'] { set title m.' (seed 0)';
            plot '$OUT/gan-'.m.'-seed0.txt' index 1 using 1:2 with dots lc rgb '#999999',
                 '' index 0 using 1:2 with points pt 7 ps 0.3 lc rgb '#cc2200' };
        unset multiplot"
    echo "figure: $OUT/gan.png (grey: real samples, red: generated)"
fi

# AIT Table 5: the architecture search on FashionMNIST with darts, rhg, cg and ait (search
# accuracies, the retrained derived network's test accuracy, its parameters); short: a few steps
part nas
if [ "$FULL" = 1 ]; then
    run nas nas --methods darts,rhg,cg,ait
else
    run nas nas --methods darts,ait --ul-iters 5 --set retrain=30 --set n_test=2000
fi

# Data hyper-cleaning on FashionMNIST (linear model): all methods, brief unless --full
part hyperclean
if [ "$FULL" = 1 ]; then
    # the README's short tables, measured with cold starts (+nowarm_start: rhg, trhg, cg and
    # neumann now warm-start by default on hyper-cleaning)
    COLD=rhg+nowarm_start,trhg+nowarm_start,cg+nowarm_start,neumann+nowarm_start
    run hyperclean-linear hyperclean --methods $COLD,bda,ait,aitp,bvfim,bome,galet
    run hyperclean-mlp hyperclean --set model=mlp --ll-iters 50 --ul-iters 20 --methods $COLD,bda,ait,bvfim,bome,galet
    # AIT_P on the MLP with its MLP settings (models/hyperclean.c: the prior pretrained at the LL
    # step, z's Adam step 0.001)
    run hyperclean-mlp-aitp hyperclean --set model=mlp --set pretrain_lr=0.3 --lr-z 0.001 --ll-iters 50 \
        --ul-iters 20 --methods aitp
    # At the papers' size (README "Hyper-cleaning at the papers' size"): the AIT script's 2-layer
    # LL, Linear(784, 300) -> Linear(300, 10) without activation (folded: its products over the
    # data 10 wide), K = 10 LL steps a UL iteration (warm starts where the method has them), the
    # PyTorch peer's LL weight decay l2 = 1e-3, T = 1000 UL iterations; one part per method,
    # 4-15 CPU minutes each (ait with z's Adam step 0.001: at its default 0.01 z's steps swamp
    # the network's weights)
    for spec in "rhg --ll-iters 10" "trhg --ll-iters 10 --truncate 5" "cg --ll-iters 10 --J 10" \
        "neumann --ll-iters 10 --J 10 --eta 0.1" "ait --ll-iters 10 --lr-z 0.001" "bome --T 10" \
        "bvfim --Tz 10 --Ty 10" "galet --N 10 --T-w 10" "bda --ll-iters 10"; do
        m=${spec%% *}
        part "hc-2layer-$m"
        # shellcheck disable=SC2086
        run "hyperclean-2layer-$m" hyperclean --set model=mlp --set hidden=300 --set act=none --set l2=0.001 \
            --ul-iters 1000 --methods $spec
    done
else
    run hyperclean-linear hyperclean --ul-iters 10 --ll-iters 30 --methods rhg,cg,ait,bome,galet
fi
# Few-shot FashionMNIST (4-way, 1 and 5 shots, 600 meta-test tasks; README "Task sets"): every
# meta-learning method with its paper rows (100 UL iterations), each report's test_acc and the
# no-meta-learning baseline's; --full only (about 16 runs of a few CPU minutes)
part fewshot
if [ "$FULL" = 1 ]; then
    for shots in 1 5; do
        for m in maml fomaml reptile rhg trhg bda ait cg; do
            "$H" run fewshot --method "$m" --set ways=4 --set shots=$shots --set threads=2 --json >"$OUT/fewshot-$m-$shots.json"
            echo "fewshot $shots-shot $m: test_acc $(field test_acc <"$OUT/fewshot-$m-$shots.json") +- $(field test_acc_ci95 <"$OUT/fewshot-$m-$shots.json"), baseline $(field baseline_acc <"$OUT/fewshot-$m-$shots.json")"
        done
    done
fi
part
echo "tables and figures in $OUT"
printf "time of each part (wall):\n$TIMES"
