// Exactly reversible heavy-ball momentum for the hypergradient sweep: Maclaurin, Duvenaud and
// Adams, "Gradient-based Hyperparameter Optimization through Reversible Learning" (ICML 2015),
// Sec. 3 and Alg. 2. The forward pass runs the momentum step in fixed point,
//   V_{k+1} = beta V_k - G_k,   Y_{k+1} = Y_k + V_{k+1},   G_k = round(2^R s_l grad_y f(x, y_k)),
// with Y = 2^R y and V = 2^R (y_k - y_{k-1}) as 64-bit integers. Adding is exact, and G_k is
// computed again from Y_k in the sweep, so only the multiplication by beta loses information: for
// beta = j / 2^p the p low bits of V_k, which are kept (Sec. 3.1's information buffer; the paper
// packs it in log2(1/beta) bits per entry by arithmetic on a big integer, here p bits, a plain bit
// stack). The sweep then undoes the steps from the last state,
//   Y_k = Y_{k+1} - V_{k+1},   V_k = 2^p (V_{k+1} + G_k) / j + (the kept bits),
// and re-records the (floating-point) momentum step at each reconstructed state for its
// vector-Jacobian product, as the stored sweep does. Memory: O(n) plus p bits per entry per step.
#include "sweep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { RADIX = 52 };                       // y = 2^-52 Y: 2.2e-16 steps, |y| < 512
static const double LIMIT = 0x1p61;        // |Y|, |V|, |G| below 2^61: sums cannot overflow

typedef struct {
    int n, p;          // entries, bits per entry per step
    int64_t j;         // beta = j / 2^p
    double s;          // the LL step
    int64_t *Y, *V;    // [n] each
    double *state;     // [2 n]: (y_k, y_{k-1}) as doubles
    double *g;         // [n]
    uint64_t *bits;    // the kept bits, a stack
    size_t top;        // bits on it
    blo_stepper st;    // x as a constant
} rev;

static void to_state(rev *r) {
    for (int i = 0; i < r->n; i++) {
        r->state[i] = ldexp((double)r->Y[i], -RADIX);
        r->state[r->n + i] = ldexp((double)(r->Y[i] - r->V[i]), -RADIX);
    }
}

// G = round(2^R s_l grad_y f(x, y)) at the state's y [n], into r->g as integers held in doubles.
static blo_status step_grad(rev *r, int k, blo_error *err) {
    ad_tape *t = r->st.t;
    ad_mark m = ad_tape_mark(t);
    ad_var yv = ad_param(t, ad_vec_shape(r->n), r->state);
    ad_var g = blo_ll_grad_y(t, r->st.p, r->st.xv, yv);
    const double *gv = ad_value(t, g);
    blo_status s = blo_tape_check(t, err, "reversible momentum: grad_y f");
    for (int i = 0; !s && i < r->n; i++) {
        double G = nearbyint(ldexp(r->s * gv[i], RADIX));
        if (!(fabs(G) < LIMIT))
            s = blo_fail(err, BLO_ETAPE, "reversible momentum at k = %d: s_l grad_y f entry %d = %g leaves "
                         "the fixed-point range (|.| < 2^%d)", k, i, r->s * gv[i], 61 - RADIX);
        r->g[i] = G;
    }
    ad_tape_rewind(t, m);
    return s;
}

static blo_status forward_step(rev *r, int k, blo_error *err) {
    to_state(r);
    blo_status s = step_grad(r, k, err);
    uint64_t mask = ((uint64_t)1 << r->p) - 1;
    for (int i = 0; !s && i < r->n; i++) {
        uint64_t low = (uint64_t)r->V[i] & mask;
        size_t at = r->top + (size_t)i * (size_t)r->p; // entry i's bits of this step
        for (int b = 0; b < r->p; b++, at++)
            if (low >> b & 1) r->bits[at / 64] |= (uint64_t)1 << (at % 64);
        int64_t q = (r->V[i] - (int64_t)low) / ((int64_t)1 << r->p); // exact: a multiple of 2^p
        r->V[i] = q * r->j - (int64_t)r->g[i];
        r->Y[i] += r->V[i];
        if (!(fabs((double)r->Y[i]) < LIMIT))
            s = blo_fail(err, BLO_ETAPE, "reversible momentum at k = %d: y entry %d leaves the fixed-point "
                         "range (|y| < 2^%d)", k, i, 61 - RADIX);
    }
    r->top += (size_t)r->n * (size_t)r->p;
    return s;
}

// From state k + 1 back to state k.
static blo_status undo_step(rev *r, int k, blo_error *err) {
    for (int i = 0; i < r->n; i++) r->Y[i] -= r->V[i];
    for (int i = 0; i < r->n; i++) r->state[i] = ldexp((double)r->Y[i], -RADIX);
    blo_status s = step_grad(r, k, err);
    r->top -= (size_t)r->n * (size_t)r->p;
    for (int i = 0; !s && i < r->n; i++) {
        int64_t qj = r->V[i] + (int64_t)r->g[i], low = 0; // = q j exactly
        size_t at = r->top + (size_t)i * (size_t)r->p;
        for (int b = 0; b < r->p; b++, at++) {
            low |= (int64_t)(r->bits[at / 64] >> (at % 64) & 1) << b;
            r->bits[at / 64] &= ~((uint64_t)1 << (at % 64));
        }
        r->V[i] = qj / r->j * ((int64_t)1 << r->p) + low;
    }
    to_state(r);
    return s;
}

blo_status blo_reversible_sweep(ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                                const blo_hypergrad_params *hp, const double *x, const double *y0,
                                double *Fv, double *gx, double *lam, lean_result *res, blo_error *err) {
    int n = p->n_y, K = hp->K;
    rev r = {.n = n, .p = blo_momentum_bits(d->par.momentum.beta), .s = d->par.momentum.s_l};
    r.j = (int64_t)ldexp(d->par.momentum.beta, r.p);
    size_t words = ((size_t)K * (size_t)n * (size_t)r.p + 63) / 64;
    blo_status s = blo_check_memory((double)words, 8, "reversible momentum's kept bits", err);
    if (s) return s;
    r.Y = malloc(sizeof(int64_t) * 2 * (size_t)n);
    r.state = malloc(sizeof(double) * 3 * (size_t)n);
    r.bits = calloc(words ? words : 1, sizeof(uint64_t));
    if (!r.Y || !r.state || !r.bits) {
        free(r.Y), free(r.state), free(r.bits);
        return blo_fail(err, BLO_ENOMEM, "reversible momentum: out of memory for %zu bytes of kept bits", 8 * words);
    }
    r.V = r.Y + n, r.g = r.state + 2 * (size_t)n;
    for (int i = 0; i < n && !s; i++) { // y_{-1} = y_0: V_0 = 0
        double y = y0 ? y0[i] : 0, Y = nearbyint(ldexp(y, RADIX));
        if (!(fabs(Y) < LIMIT))
            s = blo_fail(err, BLO_EARG, "reversible momentum: y0 entry %d = %g leaves the fixed-point range "
                         "(|y| < 2^%d)", i, y, 61 - RADIX);
        r.Y[i] = (int64_t)Y, r.V[i] = 0;
    }
    blo_stepper_begin(&r.st, t, p, d, x, 0);
    for (int k = 0; k <= K && !s; k++) {
        to_state(&r);
        if (Fv) s = blo_stepper_visit(&r.st, k, r.state, Fv + k, NULL, NULL, NULL, err);
        if (!s && k < K) s = forward_step(&r, k, err);
    }
    int k_end = !s && hp->ptt ? blo_ptt_kbar(Fv, K) : K;
    int k_start = hp->truncate > 0 && hp->truncate < k_end ? k_end - hp->truncate : 0;
    *res = (lean_result){.kbar = k_end, .k_start = k_start, .k_end = k_end, .fwd_steps = K,
                         .reversible_bytes = 8 * words};
    blo_stepper bw = {0};
    int began = 0;
    for (int k = K; !s; k--) { // (Y, V) and state hold state k
        if (k == k_end) {
            s = blo_sweep_start(t, p, d, x, r.state, &res->F_end, gx, lam, hp->y_end_out, err);
            if (!s) blo_stepper_begin(&bw, t, p, d, x, 1), began = 1;
        }
        if (!s && k < k_end) s = blo_stepper_vjp(&bw, k, r.state, NULL, gx, lam, err);
        if (s || k == k_start) break;
        s = undo_step(&r, k - 1, err);
    }
    // back at state 0 the reconstruction must give V_0 = 0 exactly (y_{-1} = y_0)
    for (int i = 0; !s && k_start == 0 && i < n; i++)
        if (r.V[i]) s = blo_fail(err, BLO_ETAPE, "reversible momentum: entry %d not reconstructed exactly", i);
    if (began) blo_stepper_end(&bw);
    blo_stepper_end(&r.st);
    free(r.Y), free(r.state), free(r.bits);
    return s;
}
