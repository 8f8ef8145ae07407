// Binomial checkpointing for the lean reverse sweep: Griewank and Walther, "Algorithm 799:
// revolve: an implementation of checkpointing for the reverse or adjoint mode of computational
// differentiation", ACM TOMS 26(1), 2000. With c slots for states the reversal of L steps takes
// at least t(L, c) = r L - beta(c + 1, r - 1) forward steps, beta(c, r) = C(c + r, c), where r is
// the repetition number with beta(c, r - 1) < L <= beta(c, r) (their Proposition 1 / Eq. 2);
// the schedule below attains it. The recomputed steps are the same calls on the same doubles
// as the first pass, so the sweep's result has the same bits as one over stored iterates.
#include "sweep.h"

#include <stdlib.h>
#include <string.h>

// ---- the schedule's arithmetic ------------------------------------------------------------------

#define BIG ((long long)1 << 62) // saturation: larger than any count of steps we take

// beta(c, r) = C(c + r, c) (0 for r < 0), saturated at BIG.
static long long beta(int c, long long r) {
    if (r < 0) return 0;
    long long b = 1; // C(c + j, j) for j = 0 .. r, each exact: C(c+j, j) = C(c+j-1, j-1) (c+j) / j
    for (long long j = 1; j <= r; j++) {
        if (b > BIG / (c + j)) return BIG;
        b = b * (c + j) / j;
    }
    return b;
}

// The repetition number r: beta(c, r - 1) < L <= beta(c, r) (r = 0 for L = 1).
static long long repetitions(long long L, int c) {
    long long r = 0;
    while (beta(c, r) < L) r++;
    return r;
}

long long blo_revolve_steps(long long L, int c) {
    if (L <= 1) return 0;
    if (c < 1) return -1;
    if (c == 1) return L * (L - 1) / 2; // from state_0 to each state in turn
    long long r = repetitions(L, c);
    return r * L - beta(c + 1, r - 1);
}

// Cost of splitting at l: advance l steps, reverse the last L - l with one slot fewer, then the
// first l with all c.
static long long split_cost(long long L, int c, long long l) {
    return l + blo_revolve_steps(L - l, c - 1) + blo_revolve_steps(l, c);
}

// The optimal first checkpoint (Griewank and Walther's range for it: max(beta(c, r - 2),
// L - beta(c - 1, r)) <= l <= min(beta(c, r - 1), L - beta(c - 1, r - 1))); if rounding at an end
// of the range ever made it miss the optimum, a scan finds one.
long long blo_revolve_split(long long L, int c) {
    long long r = repetitions(L, c), lo = beta(c, r - 2), alt = L - beta(c - 1, r);
    long long l = lo > alt ? lo : alt;
    if (l < 1) l = 1;
    if (l > L - 1) l = L - 1;
    long long best = blo_revolve_steps(L, c);
    if (split_cost(L, c, l) == best) return l;
    for (long long j = 1; j < L; j++)
        if (split_cost(L, c, j) == best) return j;
    return l;
}

// ---- the sweep -------------------------------------------------------------------------------------

typedef struct {
    const blo_revolve_ctx *c;
    blo_stepper fw;  // forward steps: x a constant
    int S, reached;  // the furthest state reached so far (its F is known)
    long long steps;
} advancer;

// From state [S] at step k, n >= 0 steps into out [S] (may alias neither); work [2 S] scratch.
static blo_status advance(advancer *a, int k, const double *state, int n, double *out,
                          double *work, blo_error *err) {
    size_t bytes = sizeof(double) * (size_t)a->S;
    const double *cur = state;
    blo_status s = BLO_OK;
    for (int j = 0; j < n && !s; j++) {
        double *next = work + (size_t)(j & 1) * a->S;
        int kk = k + j + 1; // the state this step reaches
        s = blo_stepper_visit(&a->fw, k + j, cur, NULL, next, NULL, NULL, err);
        if (!s && a->c->F && kk > a->reached) {
            s = blo_stepper_visit(&a->fw, kk, next, a->c->F + kk, NULL, NULL, NULL, err);
            a->reached = kk;
        }
        cur = next;
        a->steps++;
    }
    if (!s) memcpy(out, cur, bytes);
    return s;
}

blo_status blo_revolve_sweep(const blo_revolve_ctx *c, int a, int L, const double *state_a,
                             int slots, double *F_end, double *gx, double *lam,
                             long long *fwd_steps, blo_error *err) {
    int S = c->d->state_size;
    size_t SS = (size_t)S;
    // slots [slots S], the checkpoints' steps [slots], scratch [2 S], the state being reversed [S]
    double *slot = malloc(sizeof(double) * ((size_t)slots + 3) * SS);
    int *at = malloc(sizeof(int) * (size_t)slots);
    if (!slot || !at) {
        free(slot), free(at);
        return blo_fail(err, BLO_ENOMEM, "checkpointed sweep: out of memory for %d states of %d doubles",
                        slots + 3, S);
    }
    double *work = slot + (size_t)slots * SS, *cur = work + 2 * SS;
    advancer adv = {.c = c, .S = S, .reached = a};
    blo_stepper_begin(&adv.fw, c->t, c->p, c->d, c->x, 0);
    memcpy(slot, state_a, sizeof(double) * SS);
    at[0] = a;
    int top = 0, b = a + L; // checkpoints slot[0..top]; steps b .. a+L-1 are reversed
    // The first reversal is of the last step: the sweep starts at state_{a+L}, reached from the
    // schedule's first advances. The two steppers nest: bw's x is recorded after fw's.
    blo_status s = BLO_OK;
    int started = 0;
    blo_stepper bw = {0};
    while (!s && b > a) {
        int p = at[top], free_slots = slots - top; // this part's slots, its start's included
        if (b - p >= 2 && free_slots >= 2) { // keep a state further on and reverse after it first
            int l = (int)blo_revolve_split(b - p, free_slots);
            s = advance(&adv, p, slot + (size_t)top * SS, l, slot + (size_t)(top + 1) * SS, work, err);
            at[++top] = p + l;
            continue;
        }
        // the state at b - 1: the checkpoint itself, or recomputed from it (one slot left)
        s = advance(&adv, p, slot + (size_t)top * SS, b - 1 - p, cur, work, err);
        if (!s && !started) {
            s = advance(&adv, b - 1, cur, 1, work + SS, work, err);
            if (!s) s = blo_sweep_start(c->t, c->p, c->d, c->x, work + SS, F_end, gx, lam, c->y_out, err);
            if (!s) blo_stepper_begin(&bw, c->t, c->p, c->d, c->x, 1);
            started = 1;
        }
        if (!s) s = blo_stepper_vjp(&bw, b - 1, cur, NULL, gx, lam, err);
        b--;
        if (top > 0 && at[top] == b) top--; // that checkpoint's part is reversed: free its slot
    }
    if (started) blo_stepper_end(&bw);
    blo_stepper_end(&adv.fw);
    *fwd_steps = adv.steps;
    free(slot), free(at);
    return s;
}
