// Long unrolls in bounded memory: the checkpointed reverse sweep (binomial checkpointing,
// Griewank and Walther's revolve) against the sweep over stored iterates, bit for bit, for every
// dynamics and truncation mode; its count of forward steps against the closed formula t(K, c)
// and against a dynamic program over every split; the budget's errors.
#include "harness.h"

#include "../bilevel/blo.h"
#include "../models/models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void test_bilevel_checkpoint(void);

enum { NX = 3, NY = 4 };

// A small non-quadratic problem: F = 1/2 ||y - b||^2 + 0.2 sum(tanh(y) * (E x)) + 0.1 sum(sin x),
// f = 1/2 y^T A y - y^T B x + 0.3 sum(sin(y + C x)), A = I + 0.5 M M^T / NY: strongly convex in y.
typedef struct {
    double A[NY * NY], B[NY * NX], C[NY * NX], E[NY * NX], b[NY];
} cp;

static ad_var mv(ad_tape *t, const double *M, int r, int c, ad_var v) {
    return ad_matvec(t, ad_const(t, ad_mat_shape(r, c), M), v, 0);
}
static ad_var cp_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const cp *q = u;
    ad_var v = ad_scale(t, ad_sqnorm(t, ad_sub(t, y, ad_const(t, ad_vec_shape(NY), q->b))), 0.5);
    v = ad_add(t, v, ad_scale(t, ad_sum(t, ad_mul(t, ad_tanh(t, y), mv(t, q->E, NY, NX, x))), 0.2));
    return ad_add(t, v, ad_scale(t, ad_sum(t, ad_sin(t, x)), 0.1));
}
static ad_var cp_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const cp *q = u;
    ad_var v = ad_sub(t, ad_scale(t, ad_dot(t, y, mv(t, q->A, NY, NY, y)), 0.5), ad_dot(t, y, mv(t, q->B, NY, NX, x)));
    return ad_add(t, v, ad_scale(t, ad_sum(t, ad_sin(t, ad_add(t, y, mv(t, q->C, NY, NX, x)))), 0.3));
}
static void cp_make(cp *q, uint64_t seed) {
    ad_rng r;
    ad_rng_seed(&r, seed);
    double M[NY * NY];
    for (int i = 0; i < NY * NY; i++) M[i] = ad_rng_normal(&r);
    for (int i = 0; i < NY; i++)
        for (int j = 0; j < NY; j++) {
            double s = 0;
            for (int k = 0; k < NY; k++) s += M[i * NY + k] * M[j * NY + k];
            q->A[i * NY + j] = (i == j) + 0.5 * s / NY;
        }
    for (int i = 0; i < NY * NX; i++) q->B[i] = ad_rng_normal(&r), q->C[i] = 0.5 * ad_rng_normal(&r),
                                      q->E[i] = ad_rng_normal(&r);
    for (int i = 0; i < NY; i++) q->b[i] = ad_rng_normal(&r);
}

// A user's step map: damped gradient descent y - s (grad f + 0.1 tanh(y)).
static ad_var user_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x,
                        ad_var y) {
    (void)d, (void)k;
    ad_var g = ad_add(t, blo_ll_grad_y(t, p, x, y), ad_scale(t, ad_tanh(t, y), 0.1));
    return ad_axpy(t, y, -0.1, g);
}

// Every dynamics: the built-in ones (with step sizes safe for this problem) and a user's.
static int make_dynamics(blo_dynamics *out) {
    int n = 0;
    out[n++] = blo_dynamics_gd(NY, (blo_gd_params){.s_l = 0.15});
    out[n++] = blo_dynamics_momentum(NY, (blo_momentum_params){.s_l = 0.1, .beta = 0.6});
    out[n++] = blo_dynamics_nesterov(NY, (blo_nesterov_params){.s_l = 0.1});
    out[n++] = blo_dynamics_accel(NY, (blo_accel_params){.L_f = 4});
    blo_bda_params bda = blo_bda_default_params();
    out[n++] = blo_dynamics_bda(NY, bda);
    out[n++] = (blo_dynamics){.name = "user", .state_size = NY, .step = user_step};
    return n;
}

typedef struct {
    const char *name;
    int truncate, ptt, ia;
    double prior;
} mode;

static const mode modes[] = {
    {"rhg", 0, 0, 0, 0},  {"trhg", 7, 0, 0, 0}, {"ptt", 0, 1, 0, 0},     {"ptt+trhg", 5, 1, 0, 0},
    {"ia", 0, 0, 1, 0},   {"ia+prior", 0, 0, 1, 0.7}, {"ia+ptt", 0, 1, 1, 0}, {"ia+trhg", 6, 0, 1, 0},
};

typedef struct {
    double gx[NX], gz[NY], F[64], y[NY];
    blo_hypergrad_info info;
    blo_status s;
} result;

static result run(const blo_problem *p, const blo_dynamics *d, const mode *m, int K, size_t budget,
                  const double *x, const double *y0, const double *zp) {
    result r;
    memset(&r, 0, sizeof r);
    blo_hypergrad_params hp = blo_hypergrad_default_params();
    hp.K = K, hp.truncate = m->truncate, hp.ptt = m->ptt, hp.ia = m->ia, hp.prior_lambda = m->prior;
    hp.z_prior = zp, hp.y_end_out = r.y, hp.graph_budget = 0, hp.memory_budget = budget;
    r.s = blo_hypergrad(p, d, &hp, x, y0, r.gx, r.gz, r.F, &r.info, NULL);
    return r;
}

static double rel_err(int n, const double *a, const double *ref) {
    double d = 0, m = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs(a[i] - ref[i])), m = fmax(m, fabs(ref[i]));
    return d / fmax(m, 1e-300);
}

// The budget that gives the sweep c slots with F along the trajectory (choose_slots' count).
static size_t budget_for(int c, int S, int K) { return 8 * ((size_t)NX + (size_t)S + (size_t)K + 1 + (5 + (size_t)c) * (size_t)S); }

static bool same_bits(const result *a, const result *b, int K) {
    return !memcmp(a->gx, b->gx, sizeof a->gx) && !memcmp(a->gz, b->gz, sizeof a->gz) &&
           !memcmp(a->F, b->F, sizeof(double) * (size_t)(K + 1)) && !memcmp(a->y, b->y, sizeof a->y) &&
           !memcmp(&a->info.value, &b->info.value, sizeof(double)) && a->info.kbar == b->info.kbar &&
           a->info.k_start == b->info.k_start;
}

// The forward steps the checkpointed sweep must take: the first pass under PTT, the steps to
// k_start, then t(L, c) + 1 over L = k_end - k_start.
static long long expected_steps(const mode *m, const blo_hypergrad_info *in, int K) {
    int L = in->k_end - in->k_start;
    return (m->ptt ? K : 0) + in->k_start + blo_revolve_steps(L, in->slots) + 1;
}

// t(L, c) by a dynamic program over every first split (the recurrence the schedule follows).
static void revolve_dp(int Lmax, int cmax, long long *t) {
    for (int c = 1; c <= cmax; c++)
        for (int L = 1; L <= Lmax; L++) {
            long long *v = t + (size_t)c * (Lmax + 1) + L;
            if (L == 1) *v = 0;
            else if (c == 1) *v = (long long)L * (L - 1) / 2;
            else {
                *v = -1;
                for (int l = 1; l < L; l++) {
                    long long cost = l + t[(size_t)(c - 1) * (Lmax + 1) + L - l] + t[(size_t)c * (Lmax + 1) + l];
                    if (*v < 0 || cost < *v) *v = cost;
                }
            }
        }
}

void test_bilevel_checkpoint(void) {
    cp q;
    cp_make(&q, 11);
    blo_problem p = {.n_x = NX, .n_y = NY, .F = cp_F, .f = cp_f, .user = &q};
    double x[NX] = {0.3, -0.5, 0.8}, y0[NY] = {0.1, -0.2, 0.3, 0.05}, zp[NY] = {0.2, 0, -0.1, 0.4};

    TEST_CASE("checkpoint: bit for bit with stored iterates, every dynamics and mode") {
        blo_dynamics dyn[8];
        int nd = make_dynamics(dyn), K = 23, runs = 0, cs[] = {1, 2, 3, 6};
        printf("  %-9s", "dynamics");
        for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) printf(" %-9s", modes[m].name);
        printf("  (same bits in all of c = 1, 2, 3, 6)\n");
        for (int i = 0; i < nd; i++) {
            printf("  %-9s", dyn[i].name);
            for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
                const mode *md = &modes[m];
                result ref = run(&p, &dyn[i], md, K, 0, x, y0, zp);
                EXPECT(!ref.s && ref.info.slots == 0 && ref.info.recomputed == 0, "stored %s %s",
                       dyn[i].name, md->name);
                bool ok = !ref.s;
                for (size_t j = 0; j < sizeof cs / sizeof *cs; j++) {
                    result r = run(&p, &dyn[i], md, K, budget_for(cs[j], dyn[i].state_size, K), x, y0, zp);
                    int L = r.info.k_end - r.info.k_start, want_c = cs[j] < L ? cs[j] : L;
                    bool good = !r.s && same_bits(&r, &ref, K) && r.info.slots == want_c &&
                                r.info.fwd_steps == expected_steps(md, &r.info, K) &&
                                r.info.recomputed == r.info.fwd_steps - K;
                    EXPECT(good, "%s %s c = %d: status %d, slots %d, steps %lld (want %lld), same bits %d",
                           dyn[i].name, md->name, cs[j], (int)r.s, r.info.slots, r.info.fwd_steps,
                           expected_steps(md, &r.info, K), (int)same_bits(&r, &ref, K));
                    ok = ok && good;
                    runs++;
                }
                printf(" %-9s", ok ? "same" : "DIFFERS");
            }
            printf("\n");
        }
        printf("  %d checkpointed runs, K = %d\n", runs, K);
    }

    TEST_CASE("checkpoint: t(L, c) closed formula equals the dynamic program") {
        enum { LM = 70, CM = 7 };
        long long *t = calloc((size_t)(CM + 1) * (LM + 1), sizeof *t);
        int bad = 0;
        revolve_dp(LM, CM, t);
        for (int c = 1; c <= CM; c++)
            for (int L = 1; L <= LM; L++)
                bad += blo_revolve_steps(L, c) != t[(size_t)c * (LM + 1) + L];
        EXPECT(!bad, "%d pairs (L <= %d, c <= %d) differ", bad, LM, CM);
        free(t);
        // by hand: beta(3, 1) = 4 < 10 <= beta(3, 2) = 10, r = 2: 2 * 10 - beta(4, 1) = 15;
        // beta(20, 3) = 1771 < 10^4 <= beta(20, 4) = 10626: 4 * 10^4 - beta(21, 3) = 37976
        EXPECT(blo_revolve_steps(10, 3) == 15 && blo_revolve_steps(10000, 20) == 37976 &&
               blo_revolve_steps(5, 1) == 10 && blo_revolve_steps(7, 7) == 6 && blo_revolve_steps(1, 1) == 0 &&
               blo_revolve_steps(4, 0) == -1,
               "t(10, 3) = %lld, t(10^4, 20) = %lld", blo_revolve_steps(10, 3), blo_revolve_steps(10000, 20));
    }

    TEST_CASE("checkpoint: steps taken equal the revolve optimum for (K, c)") {
        blo_dynamics gd = blo_dynamics_gd(NY, (blo_gd_params){.s_l = 0.15});
        const int pairs[][2] = {{5, 1}, {9, 1}, {10, 2}, {10, 3}, {37, 2}, {37, 4}, {60, 5}, {200, 3}, {211, 9}};
        const mode *rhg = &modes[0];
        printf("  K   c   forward steps  t(K, c) + 1\n");
        for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
            int K = pairs[i][0], c = pairs[i][1];
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = K, hp.graph_budget = 0, hp.memory_budget = budget_for(c, NY, K) - 8 * ((size_t)K + 1);
            double gx[NX], gr[NX];
            blo_hypergrad_info in, ir;
            blo_error e;
            blo_status s = blo_hypergrad(&p, &gd, &hp, x, y0, gx, NULL, NULL, &in, &e);
            hp.memory_budget = 0;
            s = s ? s : blo_hypergrad(&p, &gd, &hp, x, y0, gr, NULL, NULL, &ir, &e);
            printf("  %-3d %-3d %-14lld %lld\n", K, c, in.fwd_steps, blo_revolve_steps(K, c) + 1);
            EXPECT(!s && in.slots == c && in.fwd_steps == blo_revolve_steps(K, c) + 1 &&
                   in.fwd_steps == expected_steps(rhg, &in, K) && !memcmp(gx, gr, sizeof gx),
                   "K = %d, c = %d: status %d, slots %d, steps %lld", K, c, (int)s, in.slots, in.fwd_steps);
        }
    }

    TEST_CASE("reversible momentum: the stored sweep's hypergradient to 1e-12, in a fraction of its memory") {
        const double betas[] = {0.5, 0.75, 0.8984375};
        const mode *ms[] = {&modes[0], &modes[1], &modes[2], &modes[3], &modes[4], &modes[5], &modes[6]};
        int K = 40;
        double worst = 0;
        for (size_t b = 0; b < sizeof betas / sizeof *betas; b++)
            for (size_t m = 0; m < sizeof ms / sizeof *ms; m++) {
                blo_momentum_params mp = {.s_l = 0.1, .beta = betas[b]};
                blo_dynamics fl = blo_dynamics_momentum(NY, mp);
                mp.reversible = 1;
                blo_dynamics rv = blo_dynamics_momentum(NY, mp);
                result ref = run(&p, &fl, ms[m], K, 0, x, y0, zp), r = run(&p, &rv, ms[m], K, 0, x, y0, zp);
                double e = fmax(rel_err(NX, r.gx, ref.gx), ms[m]->ia ? rel_err(NY, r.gz, ref.gz) : 0);
                worst = fmax(worst, e);
                EXPECT(!ref.s && !r.s && e <= 1e-12 && r.info.kbar == ref.info.kbar &&
                           r.info.k_start == ref.info.k_start && r.info.reversible_bytes > 0 && !r.info.graph,
                       "beta %g %s: status %d, relative error %.2e, kbar %d / %d", betas[b], ms[m]->name,
                       (int)r.s, e, r.info.kbar, ref.info.kbar);
                if (b == 0 && m == 0)
                    printf("  K = %d, n = %d, beta = 1/2: kept bits %zu bytes; stored states (K+1) 2n 8 = %d bytes\n",
                           K, NY, r.info.reversible_bytes, (K + 1) * 2 * NY * 8);
            }
        printf("  worst relative error against the stored sweep: %.2e\n", worst);
        // refused: beta not j / 2^p, and a Y box (the projection cannot be undone)
        blo_dynamics bad = blo_dynamics_momentum(NY, (blo_momentum_params){.s_l = 0.1, .beta = 0.9, .reversible = 1});
        result r = run(&p, &bad, &modes[0], K, 0, x, y0, zp);
        EXPECT(r.s == BLO_EARG, "beta = 0.9 refused (status %d)", (int)r.s);
        double lo[NY] = {-5, -5, -5, -5}, hi[NY] = {5, 5, 5, 5};
        blo_problem boxed = p;
        boxed.y_lo = lo, boxed.y_hi = hi;
        blo_dynamics ok = blo_dynamics_momentum(NY, (blo_momentum_params){.s_l = 0.1, .beta = 0.5, .reversible = 1});
        r = run(&boxed, &ok, &modes[0], K, 0, x, y0, zp);
        EXPECT(r.s == BLO_EARG, "a Y box refused (status %d)", (int)r.s);
    }

    TEST_CASE("quadratic structure=tridiagonal: its optimum through the tape's own gradient of f") {
        // grad_y f(x, y) = A y - x: with x = 0 it applies A. The optimum must satisfy x* = A y*
        // and (rho A^2 + I) y* = b (the reduced gradient's zero times A), F* = F(x*, y*).
        mdl_model m;
        char err[200];
        const int n = 257;
        const double rho = 0.05;
        int made = !mdl_make_named("quadratic", "structure=tridiagonal n=257 cond=30 rho=0.05", &m, err, sizeof err);
        EXPECT(made, "%s", err);
        if (made) {
            double zero[257] = {0}, Ay[257], AAy[257], F = 0, b[257];
            blo_status s = blo_eval(&m.prob, 0, zero, m.y_star, NULL, NULL, Ay, NULL, NULL);
            if (!s) s = blo_eval(&m.prob, 0, zero, Ay, NULL, NULL, AAy, NULL, NULL);
            if (!s) s = blo_eval(&m.prob, 1, m.x_star, m.y_star, &F, NULL, b, NULL, NULL); // b = y* - grad_y F
            double e1 = 0, e2 = 0;
            for (int i = 0; i < n; i++) {
                b[i] = m.y_star[i] - b[i];
                e1 = fmax(e1, fabs(Ay[i] - m.x_star[i]));
                e2 = fmax(e2, fabs(rho * AAy[i] + m.y_star[i] - b[i]));
            }
            EXPECT(!s && e1 < 1e-12 && e2 < 1e-12 && fabs(F - m.F_star) <= 1e-12 * fabs(m.F_star),
                   "status %d: |A y* - x*| %.2e, |(rho A^2 + I) y* - b| %.2e, F %.17g vs %.17g", (int)s, e1, e2,
                   F, m.F_star);
            mdl_free(&m);
        }
        EXPECT(mdl_make_named("quadratic", "structure=tridiagonal n=10 m=3", &m, err, sizeof err) && strstr(err, "B = I"),
               "tridiagonal with m != n refused: %s", err);
        EXPECT(mdl_make_named("quadratic", "n=20000", &m, err, sizeof err) && strstr(err, "tridiagonal"),
               "a dense n = 20000 refused, naming the way out: %s", err);
    }

    TEST_CASE("checkpoint: budget errors and the stored sweep when it fits") {
        blo_dynamics mom = blo_dynamics_momentum(NY, (blo_momentum_params){.s_l = 0.1, .beta = 0.5});
        int S = mom.state_size, K = 30;
        result tiny = run(&p, &mom, &modes[0], K, budget_for(0, S, K), x, y0, zp);
        EXPECT(tiny.s == BLO_EARG, "a budget with no room for a checkpoint is refused (status %d)", (int)tiny.s);
        result big = run(&p, &mom, &modes[0], K, (size_t)1 << 20, x, y0, zp);
        EXPECT(!big.s && big.info.slots == 0 && big.info.fwd_steps == K, "a budget that holds every state stores them");
        // graph mode under a budget: graph_budget is capped by it (the lean sweep here)
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = K, hp.memory_budget = budget_for(2, S, K) - 8 * ((size_t)K + 1);
        double gx[NX];
        blo_hypergrad_info in;
        blo_status s = blo_hypergrad(&p, &mom, &hp, x, y0, gx, NULL, NULL, &in, NULL);
        EXPECT(!s && !in.graph && in.slots == 2, "graph mode capped by the memory budget (graph %d, slots %d)",
               in.graph, in.slots);
    }
}
