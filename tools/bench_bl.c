// `hypertape bench bilevel`: what a hypergradient costs. (a) RHG (GD dynamics, K = 100) on the
// dense quadratic of issue 3 with n = 10 (all overhead: the per-step cost of re-recording a step)
// and n = 1000 (BLAS-bound: the time inside cblas is printed), against PyTorch 1.13's times (the
// issue's reference machine's, or with --torch those tools/bench_torch.py measured here);
// (b) peak memory of RHG with n = 10^4, K = 1000, which must be of the order of the stored
// iterates, not K steps' graphs; (c) AIT_NC (IA + PTT) against RHG on the nonconvex sin toy as K
// and n grow, with the measured Kbar (AIT Figs. 6-7); (d) one UL iteration of data hyper-cleaning
// (RHG and CG), against PyTorch too; (e) fhg against rhg as n_x grows (bench_fhg.c). Medians over
// repeats; the machine is shared, so read the ratios. `hypertape bench reference` runs (a) and (d)
// only.
#include "bench.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"
#include "../autodiff/sparse.h"
#include "../autodiff/thin.h"
#include "../bilevel/blo.h"
#include "../bilevel/blo_extra.h"
#include "../models/data.h"
#include "../models/models.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

// Whose PyTorch times the ratios are against (bench_opts.torch).
static const char *torch_where(const bench_opts *o) {
    return o->torch_here ? "on this machine" : "on the issue's machine";
}
// The targets are ratios to PyTorch on the same machine: judged only against times measured here.
static const char *verdict(const bench_opts *o, double ratio, double target) {
    if (!o->torch_here) return "; the target is against PyTorch here: tools/bench_vs_torch.sh";
    return ratio >= target ? "; met" : "; below target";
}

// ---- (a) the dense quadratic: F = 1/2 ||y - b||^2 + rho/2 ||x||^2, f = 1/2 y^T A y - y^T B x ----

typedef struct {
    int n;
    double *A, *B, *b, *x, rho, L; // A SPD [n, n], B [n, n]; L bounds A's largest eigenvalue
} dense_qp;

// A = I + 0.5 M M^T / n (eigenvalues >= 1, as in the tests), B ~ N(0, 1/n) so y* stays O(1).
static dense_qp dense_make(int n, uint64_t seed) {
    size_t nn = (size_t)n * n;
    dense_qp q = {n, malloc(sizeof(double) * nn), malloc(sizeof(double) * nn),
                  malloc(sizeof(double) * n), malloc(sizeof(double) * n), 0.3, 0};
    double *M = malloc(sizeof(double) * nn);
    ad_rng g;
    ad_rng_seed(&g, seed);
    for (size_t i = 0; i < nn; i++) M[i] = ad_rng_normal(&g);
    for (size_t i = 0; i < nn; i++) q.B[i] = ad_rng_normal(&g) / sqrt(n);
    for (int i = 0; i < n; i++) q.b[i] = ad_rng_normal(&g), q.x[i] = ad_rng_normal(&g);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 0.5 / n, M, n, M, n, 0.0, q.A, n);
    for (int i = 0; i < n; i++) q.A[(size_t)i * n + i] += 1;
    for (int i = 0; i < n; i++) { // Gershgorin: a safe GD step 1/L
        double s = 0;
        for (int j = 0; j < n; j++) s += fabs(q.A[(size_t)i * n + j]);
        if (s > q.L) q.L = s;
    }
    free(M);
    return q;
}
static void dense_free(dense_qp *q) { free(q->A), free(q->B), free(q->b), free(q->x); }

// The matrices are views (never copied per recorded step): what a user should write for large data.
static ad_var dense_F(ad_tape *t, ad_var x, ad_var y, void *user) {
    const dense_qp *q = user;
    ad_var r = ad_sub(t, y, ad_const_view(t, ad_vec_shape(q->n), q->b));
    return ad_add(t, ad_scale(t, ad_sqnorm(t, r), 0.5), ad_scale(t, ad_sqnorm(t, x), 0.5 * q->rho));
}
// f as a user of the library writes it: A is symmetric, so 1/2 y^T A y is a quadform (one product
// in its gradient), and B x is recorded at every step but computed once (a shared subexpression).
static ad_var dense_f(ad_tape *t, ad_var x, ad_var y, void *user) {
    const dense_qp *q = user;
    ad_var A = ad_const_view(t, ad_mat_shape(q->n, q->n), q->A);
    ad_var B = ad_const_view(t, ad_mat_shape(q->n, q->n), q->B);
    return ad_sub(t, ad_quadform(t, A, y), ad_dot(t, y, ad_matvec(t, B, x, 0)));
}
// The same f from general products only, as one would write it with PyTorch: 1/2 y . (A y)
// (its gradient needs A y and A^T y).
static ad_var dense_f_general(ad_tape *t, ad_var x, ad_var y, void *user) {
    const dense_qp *q = user;
    ad_var A = ad_const_view(t, ad_mat_shape(q->n, q->n), q->A);
    ad_var B = ad_const_view(t, ad_mat_shape(q->n, q->n), q->B);
    return ad_sub(t, ad_scale(t, ad_dot(t, y, ad_matvec(t, A, y, 0)), 0.5),
                  ad_dot(t, y, ad_matvec(t, B, x, 0)));
}

// Seconds of `calls` back-to-back dsymv passes over q's upper triangle (v, w [n] scratch): what
// the hypergradient's products cost outside the tape, timed next to each hypergradient so both
// see the same load on this shared host.
static double bare_block_seconds(const dense_qp *q, int calls, double *v, double *w) {
    double t0 = bench_now();
    for (int r = 0; r < calls; r++) {
        cblas_dsymv(CblasRowMajor, CblasUpper, q->n, 1.0, q->A, q->n, v, 1, 0.0, w, 1);
        v[r % q->n] += 1e-3 * w[0]; // keep the calls from being merged
    }
    return bench_now() - t0;
}

// Median seconds of one pass over q's A by cblas (dsymv on its upper triangle, or dgemv): the
// floor for one product with the matrix.
static double pass_seconds(const dense_qp *q, int sym, int reps) {
    double *v = malloc(sizeof(double) * q->n), *w = malloc(sizeof(double) * q->n);
    double *s = malloc(sizeof(double) * reps);
    for (int i = 0; i < q->n; i++) v[i] = q->x[i];
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        if (sym) cblas_dsymv(CblasRowMajor, CblasUpper, q->n, 1.0, q->A, q->n, v, 1, 0.0, w, 1);
        else cblas_dgemv(CblasRowMajor, CblasNoTrans, q->n, q->n, 1.0, q->A, q->n, v, 1, 0.0, w, 1);
        s[r] = bench_now() - t0;
        v[r % q->n] += 1e-3 * w[0]; // keep the calls from being merged
    }
    double med = bench_median(s, reps);
    free(v), free(w), free(s);
    return med;
}

// Matrix-vector products (matvec and symv values) computed so far on t.
static int64_t products(const ad_tape *t) {
    return ad_tape_op_evals(t, ad_op_find("matvec")) + ad_tape_op_evals(t, ad_op_find("symv"));
}

static void bench_quadratic(const bench_opts *o) {
    const int K = 100;
    const int ns[2] = {10, 1000};
    const double torch_ms[2] = {o->torch[TORCH_QUAD10], o->torch[TORCH_QUAD1000]};
    const double target[2] = {100, 3};
    ad_tape_params tp = ad_tape_default_params();
    tp.time_blas = 1;
    for (int c = 0; c < 2; c++) {
        int n = ns[c], reps = c == 0 ? (o->quick ? 50 : 400) : (o->quick ? 5 : 21);
        dense_qp q = dense_make(n, 11 + (uint64_t)n);
        // [0]: f with quadform (the headline), [1]: f from general products
        blo_problem p[2] = {{.n_x = n, .n_y = n, .F = dense_F, .f = dense_f, .user = &q},
                            {.n_x = n, .n_y = n, .F = dense_F, .f = dense_f_general, .user = &q}};
        blo_dynamics d = blo_dynamics_gd(n, (blo_gd_params){.s_l = 1 / q.L});
        ad_tape *t = ad_tape_new(&tp);
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = K, hp.tape = t;
        double *g = malloc(sizeof(double) * n), *g1 = malloc(sizeof(double) * n);
        double *y0 = calloc((size_t)n, sizeof(double));
        double *states = malloc(sizeof(double) * (size_t)(K + 1) * n);
        double *s = malloc(sizeof(double) * reps), *sb = malloc(sizeof(double) * reps);
        double *sf = malloc(sizeof(double) * reps), *s1 = malloc(sizeof(double) * reps);
        double *sbare = malloc(sizeof(double) * reps), *in_bare = malloc(sizeof(double) * reps);
        double *bv = malloc(sizeof(double) * n), *bw = malloc(sizeof(double) * n);
        memcpy(bv, q.x, sizeof(double) * n);
        blo_error e = {0};
        blo_status st = BLO_OK;
        // One untimed call of each: first-touch of the tape's arena and of BLAS's buffers; they
        // also count the products recorded per hypergradient and check the two f's agree.
        double per_step[2];
        for (int v = 0; v < 2 && !st; v++) {
            int64_t u0 = products(t);
            st = blo_hypergrad(&p[v], &d, &hp, q.x, NULL, v ? g1 : g, NULL, NULL, NULL, &e);
            per_step[v] = (double)(products(t) - u0) / K;
        }
        double diff = 0, scale = 0;
        for (int i = 0; i < n; i++) diff = fmax(diff, fabs(g[i] - g1[i])), scale = fmax(scale, fabs(g[i]));
        for (int r = 0; r < reps && !st; r++) {
            // The forward pass alone (K steps, no F along the trajectory) next to the full
            // hypergradient with each f, interleaved so all see the same machine load.
            double t0 = bench_now();
            st = blo_unroll(&p[0], &d, q.x, 0, y0, K, states, NULL, t, &e);
            double b0 = ad_tape_blas_seconds(t), t1 = bench_now();
            if (!st) st = blo_hypergrad(&p[0], &d, &hp, q.x, NULL, g, NULL, NULL, NULL, &e);
            double t2 = bench_now();
            sb[r] = ad_tape_blas_seconds(t) - b0;
            // as many bare dsymv calls as the tape made products, right after it (n = 1000 only:
            // at n = 10 the products are plain loops)
            int calls = (int)(per_step[0] * K + 0.5);
            sbare[r] = c == 1 ? bare_block_seconds(&q, calls, bv, bw) : 1;
            in_bare[r] = sb[r] / sbare[r];
            double t3 = bench_now();
            if (!st) st = blo_hypergrad(&p[1], &d, &hp, q.x, NULL, g1, NULL, NULL, NULL, &e);
            sf[r] = t1 - t0, s[r] = t2 - t1, s1[r] = bench_now() - t3;
        }
        if (st) {
            printf("(a) quadratic n = %d: FAILED: %s\n", n, e.msg);
        } else {
            double ms = 1e3 * bench_median(s, reps), blas = 1e3 * bench_median(sb, reps);
            double fwd = 1e3 * bench_median(sf, reps), ratio = torch_ms[c] / ms;
            double ms1 = 1e3 * bench_median(s1, reps);
            printf("(a) RHG hypergradient, GD K = %d, dense quadratic n = %d: %.3f ms (median of %d);"
                   " PyTorch 1.13 %s %.1f ms: %.1fx faster (target >= %.0fx%s)\n",
                   K, n, ms, reps, torch_where(o), torch_ms[c], ratio, target[c],
                   verdict(o, ratio, target[c]));
            printf("    f = quadform(A, y) - y.(B x): %.1f products per step; written with general"
                   " products, y.(A y)/2: %.1f per step, %.3f ms (%.1fx PyTorch); the two agree to"
                   " %.1e\n", per_step[0], per_step[1], ms1, torch_ms[c] / ms1, diff / scale);
            if (c == 0)
                printf("    per unrolled step: %.2f us for forward + sweep, %.2f us forward only"
                       " (PyTorch ~%.0f us); inside BLAS %.0f%%\n", 1e3 * ms / K, 1e3 * fwd / K,
                       1e3 * torch_ms[c] / K, 100 * blas / ms);
            else {
                double sy = pass_seconds(&q, 1, o->quick ? 20 : 200);
                double ge = pass_seconds(&q, 0, o->quick ? 20 : 200);
                printf("    inside BLAS %.2f ms (%.0f%%), outside %.2f ms; forward pass alone %.2f ms;"
                       " one bare pass over A: dsymv %.1f us, dgemv %.1f us\n",
                       blas, 100 * blas / ms, ms - blas, fwd, 1e6 * sy, 1e6 * ge);
                // The tape's products against as many bare calls timed right after each
                // hypergradient: a ratio near 1 means the products cost inside the tape what they
                // cost alone, and the hypergradient's time moves with the host's load.
                printf("    its %.0f products inside the tape %.2f ms, as many bare dsymv calls"
                       " timed after each hypergradient %.2f ms: in-tape / bare %.2fx (median of"
                       " per-repeat ratios)\n", per_step[0] * K, blas,
                       1e3 * bench_median(sbare, reps), bench_median(in_bare, reps));
            }
        }
        free(g), free(g1), free(y0), free(states), free(s), free(sb), free(sf), free(s1);
        free(sbare), free(in_bare), free(bv), free(bw);
        ad_tape_free(t);
        dense_free(&q);
    }
}

// ---- (b) peak memory: n = 10^4, K = 1000, an elementwise problem ---------------------------------
// F = 1/2 ||y - b||^2 + rho/2 ||x||^2,  f = 1/2 sum a_i y_i^2 - sum y_i x_i  (a dense 10^4 x 10^4
// matrix alone would be 800 MB and hide what the sweep keeps).

typedef struct {
    int n;
    double *a, *b, rho;
} diag_qp;

static ad_var diag_F(ad_tape *t, ad_var x, ad_var y, void *user) {
    const diag_qp *q = user;
    ad_var r = ad_sub(t, y, ad_const_view(t, ad_vec_shape(q->n), q->b));
    return ad_add(t, ad_scale(t, ad_sqnorm(t, r), 0.5), ad_scale(t, ad_sqnorm(t, x), 0.5 * q->rho));
}
static ad_var diag_f(ad_tape *t, ad_var x, ad_var y, void *user) {
    const diag_qp *q = user;
    ad_var ay2 = ad_mul(t, ad_const_view(t, ad_vec_shape(q->n), q->a), ad_square(t, y));
    return ad_sub(t, ad_scale(t, ad_sum(t, ay2), 0.5), ad_dot(t, y, x));
}

static void memory_case(const bench_opts *o) {
    (void)o; // the case is cheap (about a second); quick mode runs it in full
    const int n = 10000, K = 1000;
    diag_qp q = {n, malloc(sizeof(double) * n), malloc(sizeof(double) * n), 0.3};
    double *x = malloc(sizeof(double) * n), *g = malloc(sizeof(double) * n);
    ad_rng r;
    ad_rng_seed(&r, 2024);
    for (int i = 0; i < n; i++)
        q.a[i] = 1 + ad_rng_uniform(&r), q.b[i] = ad_rng_normal(&r), x[i] = ad_rng_normal(&r);
    blo_problem p = {.n_x = n, .n_y = n, .F = diag_F, .f = diag_f, .user = &q};
    blo_dynamics d = blo_dynamics_gd(n, (blo_gd_params){.s_l = 0.4}); // a_i <= 2: 1/L = 0.5
    ad_tape *t = ad_tape_new(NULL);
    blo_hypergrad_params hp = blo_hypergrad_default_params();
    hp.K = K, hp.tape = t;
    blo_error e = {0};
    int reset = bench_reset_peak_rss();
    size_t rss0 = bench_proc_bytes("VmRSS:");
    double t0 = bench_now();
    blo_status st = blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e);
    double sec = bench_now() - t0;
    size_t hwm = bench_proc_bytes("VmHWM:");
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double iterates = (double)(K + 1) * n * sizeof(double);
    if (st) {
        printf("(b) peak memory, RHG n = %d, K = %d: FAILED: %s\n", n, K, e.msg);
    } else {
        printf("(b) peak memory, RHG n = %d, K = %d (%.2f s): stored iterates (K+1) n 8 B = %.1f MB;"
               " tape peak %.2f MB (one step's graph)\n",
               n, K, sec, iterates / 1e6, (double)ad_tape_peak_bytes(t) / 1e6);
        if (reset && rss0 && hwm)
            printf("    peak RSS during the call %.1f MB, %.1f MB above the RSS before it"
                   " (%.2fx the iterates); process max RSS %.1f MB\n",
                   hwm / 1e6, ((double)hwm - (double)rss0) / 1e6,
                   ((double)hwm - (double)rss0) / iterates, ru.ru_maxrss / 1e3);
        else
            printf("    process max RSS %.1f MB (peak could not be reset before the call)\n",
                   ru.ru_maxrss / 1e3);
    }
    ad_tape_free(t);
    free(q.a), free(q.b), free(x), free(g);
}

// Max RSS is a process-wide high-water mark: run the case in a child so neither the earlier cases
// nor the later ones blur it (and the parent never holds the 80 MB).
static void bench_memory(const bench_opts *o) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        memory_case(o);
        fflush(stdout);
        _exit(0);
    }
    if (pid < 0) { // no fork: measure here, still correct if this is the first case run
        memory_case(o);
        return;
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        printf("(b) peak memory: the measuring child did not exit cleanly (status %d)\n", status);
}

// ---- (c) PTT on the nonconvex sin toy (AIT Eq. 20), AIT_NC vs RHG as K and n grow ---------------
// F = (x - a)^2 + ||y - a - c||^2,  f = sum_i sin(x + y_i - c_i),  x scalar, y in [-10, 10]^n,
// a = 2, c_i = 2 (AIT Eq. 20).

typedef struct {
    int n;
    double *c; // [n], all 2
    double a;
} sin_toy;

static ad_var sin_F(ad_tape *t, ad_var x, ad_var y, void *user) {
    const sin_toy *q = user;
    ad_var dy = ad_sub(t, ad_shift(t, y, -q->a), ad_const_view(t, ad_vec_shape(q->n), q->c));
    return ad_add(t, ad_square(t, ad_sum(t, ad_shift(t, x, -q->a))), ad_sqnorm(t, dy));
}
static ad_var sin_f(ad_tape *t, ad_var x, ad_var y, void *user) {
    const sin_toy *q = user;
    // x [1] broadcasts over y [n] (a scalar x shared by every coordinate, our reading of AIT Eq. 20)
    ad_var w = ad_sub(t, ad_add(t, y, x), ad_const_view(t, ad_vec_shape(q->n), q->c));
    return ad_sum(t, ad_sin(t, w));
}

typedef struct {
    double ait_ms, rhg_ms, fwd_ms, kbar_mean;
    int kbar;
    blo_status st;
    char msg[320];
} ptt_row;

// T warm-up UL iterations of AIT_NC (projected steps on x and z, alpha 0.1, the nonconvex problem's setting)
// from (x, y_0) = (-6, 0), so Kbar is the one the run settles at (the paper averages the
// stabilized Kbar); then AIT_NC and RHG hypergradients are timed at the reached (x, z).
static ptt_row ptt_case(const blo_dynamics *d, int n, int K, int T, int reps) {
    ptt_row row = {0};
    sin_toy q = {n, malloc(sizeof(double) * n), 2};
    double *lo = malloc(sizeof(double) * n), *hi = malloc(sizeof(double) * n);
    double *z = calloc((size_t)n, sizeof(double)), *gz = malloc(sizeof(double) * n);
    double *Ftraj = malloc(sizeof(double) * (K + 1));
    double *states = malloc(sizeof(double) * (size_t)(K + 1) * d->state_size);
    double *s0 = malloc(sizeof(double) * d->state_size);
    double *sa = malloc(sizeof(double) * reps), *sr = malloc(sizeof(double) * reps);
    double *sf = malloc(sizeof(double) * reps);
    for (int i = 0; i < n; i++) q.c[i] = 2, lo[i] = -10, hi[i] = 10;
    blo_problem p = {.n_x = 1, .n_y = n, .F = sin_F, .f = sin_f, .y_lo = lo, .y_hi = hi, .user = &q};
    ad_tape *t = ad_tape_new(NULL);
    blo_hypergrad_params ait = blo_hypergrad_default_params();
    ait.K = K, ait.ia = 1, ait.ptt = 1, ait.tape = t;
    blo_hypergrad_params rhg = blo_hypergrad_default_params();
    rhg.K = K, rhg.tape = t;
    blo_hypergrad_info info = {0};
    blo_error e = {0};
    double x = -6, gx = 0, ksum = 0;
    int kcount = 0;
    blo_status st = BLO_OK;
    for (int it = 0; it < T && !st; it++) {
        st = blo_hypergrad(&p, d, &ait, &x, z, &gx, gz, NULL, &info, &e);
        x -= 0.1 * gx;
        for (int i = 0; i < n; i++) z[i] = fmin(hi[i], fmax(lo[i], z[i] - 0.1 * gz[i]));
        if (it >= T - 5) ksum += info.kbar, kcount++; // the paper's average over 5 iterations
    }
    for (int r = 0; r < reps && !st; r++) {
        double t0 = bench_now();
        st = blo_hypergrad(&p, d, &ait, &x, z, &gx, gz, NULL, &info, &e);
        double t1 = bench_now();
        if (!st) st = blo_hypergrad(&p, d, &rhg, &x, z, &gx, NULL, NULL, NULL, &e);
        double t2 = bench_now();
        // the forward pass with F along the trajectory: what PTT pays before its shorter sweep
        if (!st) st = blo_state_init(&p, d, z, s0, t, &e);
        if (!st) st = blo_unroll(&p, d, &x, 0, s0, K, states, Ftraj, t, &e);
        sa[r] = t1 - t0, sr[r] = t2 - t1, sf[r] = bench_now() - t2;
    }
    row.st = st;
    if (st) {
        snprintf(row.msg, sizeof row.msg, "%s", e.msg);
    } else {
        row.ait_ms = 1e3 * bench_median(sa, reps);
        row.rhg_ms = 1e3 * bench_median(sr, reps);
        row.fwd_ms = 1e3 * bench_median(sf, reps);
        row.kbar = info.kbar;
        row.kbar_mean = kcount ? ksum / kcount : info.kbar;
    }
    ad_tape_free(t);
    free(q.c), free(lo), free(hi), free(z), free(gz), free(Ftraj), free(states), free(s0);
    free(sa), free(sr), free(sf);
    return row;
}

static void bench_ptt(const bench_opts *o) {
    const int Ks[3] = {20, 50, 100}, ns[3] = {1, 100, 1000};
    int T = o->quick ? 30 : 200, reps = o->quick ? 5 : 15;
    printf("(c) AIT_NC (IA + PTT) vs RHG on the nonconvex sin toy, time per hypergradient after %d"
           " AIT_NC UL iterations from (-6, 0); Kbar: at the timed point / mean of the last 5\n", T);
    printf("    %-6s %5s %4s %9s %9s %9s %7s %10s\n", "dyn", "n", "K", "Kbar", "AIT_NC ms",
           "RHG ms", "ratio", "fwd+F ms");
    for (int di = 0; di < 2; di++)
        for (int ni = 0; ni < 3; ni++)
            for (int ki = 0; ki < 3; ki++) {
                int n = ns[ni], K = Ks[ki];
                // PGD with s = 0.3 (the nonconvex problem's AIT_NC setting), and the Eq. 10 scheme
                // with L_f = 1 (sin's curvature bound)
                blo_dynamics d = di == 0 ? blo_dynamics_gd(n, (blo_gd_params){.s_l = 0.3})
                                         : blo_dynamics_accel(n, blo_accel_default_params());
                ptt_row r = ptt_case(&d, n, K, T, reps);
                if (r.st) {
                    printf("    %-6s %5d %4d FAILED: %s\n", d.name, n, K, r.msg);
                    continue;
                }
                char kb[32];
                snprintf(kb, sizeof kb, "%d/%.1f", r.kbar, r.kbar_mean);
                printf("    %-6s %5d %4d %9s %9.3f %9.3f %7.2f %10.3f\n", d.name, n, K, kb, r.ait_ms,
                       r.rhg_ms, r.ait_ms / r.rhg_ms, r.fwd_ms);
            }
}

// ---- (d) data hyper-cleaning: one UL iteration of RHG (K = 100) and CG (J = 10) on the linear
// model, and of RHG (K = 20) on the 2-layer model with hidden 300 ----

// A variant of one UL iteration: the model (its pixels as bytes, or as doubles), its products
// with <= 16 columns on the thin kernel or on cblas, and settings over the method's paper ones.
typedef struct {
    const mdl_model *m;
    int coded, thin; // coded: the model reads its pixels as bytes (pixels=bytes)
    const char *set; // NULL: none
    int sleep;       // 1: the tape's pool threads sleep at once between jobs (ad_tape_pool_spin 0)
} hc_variant;
enum { HC_MAX_VARIANTS = 5 };

// One UL iteration's work (the solver's direction at the start point) for each of V variants:
// median seconds over reps and median time inside products; and the products over the data per
// iteration (products_over_data below; the linear model has no other products). The variants'
// iterations alternate (which goes first rotates) so all see the same machine load;
// between(ctx, r), if given, runs after each round of them (a bare timing that should see that
// load too).
typedef void (*hc_between)(void *ctx, int r);
// Products over the data computed so far: matmul's on the doubles, or on the bytes matmul_coded's
// and the coded loss ops' (each one product, X W, then its rows' softmax or cross-entropy).
static int64_t products_over_data(const ad_tape *t, int coded) {
    if (!coded) return ad_tape_op_evals(t, ad_op_find("matmul"));
    return ad_tape_op_evals(t, ad_op_find("matmul_coded")) + ad_tape_op_evals(t, ad_op_find("softmax_coded")) +
           ad_tape_op_evals(t, ad_op_find("xent_coded"));
}
static void hc_iteration(const hc_variant *var, int V, const char *method, int reps, double *sec,
                         double *prod, double *n_products, char kernel[64], hc_between between,
                         void *ctx) {
    blo_solver *v[HC_MAX_VARIANTS] = {NULL};
    blo_config *c[HC_MAX_VARIANTS] = {NULL};
    char err[400] = "";
    blo_error e = {0};
    int ok = 1;
    for (int k = 0; k < V; k++) sec[k] = prod[k] = n_products[k] = NAN;
    for (int k = 0; k < V && ok; k++) {
        c[k] = mdl_paper_config(&mdl_hyperclean_entry, blo_method_find(method), NULL, err, sizeof err);
        ok = c[k] && (!var[k].set || !blo_config_apply(c[k], var[k].set, &e)) &&
             (v[k] = blo_solver_new(&var[k].m->prob, c[k], var[k].m->x0[0], var[k].m->y0[0],
                                    var[k].m->z_prior, &e)) != NULL;
    }
    if (!ok) printf("    %s: %s\n", method, *err ? err : e.msg);
    double *s = ok ? malloc(sizeof(double) * (size_t)reps * 3 * V) : NULL;
    if (s) {
        for (int k = 0; k < V; k++) {
            ad_tape_thin_products(blo_solver_tape(v[k]), var[k].thin);
            if (var[k].sleep) ad_tape_pool_spin(blo_solver_tape(v[k]), 0);
        }
        ad_tape_product_kernel(blo_solver_tape(v[0]), kernel);
        for (int r = 0; r < reps; r++)
            for (int k0 = 0; k0 < V; k0++) {
                int k = (k0 + r) % V; // rotate which goes first
                blo_record rec;
                ad_tape *t = blo_solver_tape(v[k]);
                int64_t u0 = products_over_data(t, var[k].coded);
                double b0 = ad_tape_blas_seconds(t), start = bench_now();
                blo_solver_direction(v[k], &rec, &e);
                s[(3 * k) * reps + r] = bench_now() - start;
                s[(3 * k + 1) * reps + r] = ad_tape_blas_seconds(t) - b0;
                s[(3 * k + 2) * reps + r] = (double)(products_over_data(t, var[k].coded) - u0);
                if (k0 == V - 1 && between) between(ctx, r);
            }
        for (int k = 0; k < V; k++) {
            sec[k] = bench_median(s + 3 * k * reps, reps);
            prod[k] = bench_median(s + (3 * k + 1) * reps, reps);
            n_products[k] = bench_median(s + (3 * k + 2) * reps, reps);
        }
    }
    for (int k = 0; k < V; k++) blo_solver_free(v[k]), blo_config_free(c[k]);
    free(s);
}

static void bench_hyperclean_linear(const bench_opts *o, const mdl_model *mb, const mdl_model *md,
                                    const mdl_model *mt, double peak) {
    // the model as shipped (pixels read as bytes, the products on the strips that skip the zero
    // pixels); its doubles on the thin kernel; its doubles on cblas (what a framework's matmul
    // does); as shipped with the pool's threads sleeping at once between jobs; the bytes on the
    // thin kernel, every entry (strips=0)
    const hc_variant var[5] = {{mb, 1, 1, NULL, 0}, {md, 0, 1, NULL, 0}, {md, 0, 0, NULL, 0}, {mb, 1, 1, NULL, 1},
                               {mt, 1, 1, NULL, 0}};
    int reps = o->quick ? 1 : 3;
    const char *methods[2] = {"rhg", "cg"};
    const double torch[2] = {o->torch[TORCH_HC_RHG], o->torch[TORCH_HC_CG]};
    for (int k = 0; k < 2; k++) {
        double t[5], prod[5], n_prod[5];
        char kernel[64] = "?";
        hc_iteration(var, mt ? 5 : 4, methods[k], reps, t, prod, n_prod, kernel, NULL, NULL);
        if (isnan(t[0])) continue; // said why
        printf("(d) hyper-cleaning 5000 x 784 x 10, linear, %s (%s): %.3f s per UL iteration (median of %d), "
               "%.0f%% in products; PyTorch 1.13 %s %.2f s: %.2fx faster (target >= %.0fx%s)\n",
               methods[k], k ? "K = 100, J = 10" : "K = 100", t[0], reps, 100 * prod[0] / t[0],
               torch_where(o), torch[k], torch[k] / t[0], k ? 2.0 : 5.0,
               verdict(o, torch[k] / t[0], k ? 2 : 5));
        // the strips run where the tape runs a vector kernel (coded_product); else cblas does
        const char *how = strcmp(kernel, "cblas") ? "skipping zero pixels, 8 rows at a time (strips)" : "on";
        printf("    pixels read as bytes (3.9 MB), products with <= %d columns %s, %s: %.3f s; as doubles "
               "(31 MB) on the thin kernel: %.3f s (%.2fx); doubles, all on cblas: %.3f s (%.0f%% in "
               "products), %.2fx\n", AD_THIN_MAX_N, how, kernel, t[0], t[1], t[1] / t[0], t[2],
               100 * prod[2] / t[2], t[2] / t[0]);
        double gfs = 2e-9 * 5000 * 784 * 10 * n_prod[0] / prod[0];
        printf("    %.0f products over the data computed per UL iteration (%.1f per LL step), %.2f ms"
               " each on average, %.1f GFLOP/s dense-equivalent, %.0f%% of the dgemm peak %.1f"
               " (doubles on the thin kernel: %.2f ms)\n", n_prod[0], n_prod[0] / 100,
               1e3 * prod[0] / n_prod[0], gfs, 100 * gfs / peak, peak, 1e3 * prod[1] / n_prod[1]);
        printf("    with the pool's threads sleeping at once between jobs (spin 0): %.3f s (%.2fx)\n", t[3],
               t[3] / t[0]);
        if (!mt || isnan(t[4])) continue;
        printf("    with strips=0 (the bytes on the thin kernel, every entry): %.3f s (%.2fx the strips), "
               "%.2fx PyTorch, %.2f ms a product over the data\n", t[4], t[4] / t[0], torch[k] / t[4],
               1e3 * prod[4] / n_prod[4]);
    }
}

// The first layer's two products over the data, X W_1 [5000, 784] x [784, 300] and X^T G
// [784, 5000] x [5000, 300], by cblas_dgemm on doubles: seconds of the pair at each repeat. And
// the pair as the model computes it (sparse=1), X1 W_1 and X1^T G with X1 = [X, 1] the training
// set's pixels and a column of ones, by the kernel that skips X1's zeros (autodiff/sparse.c):
// seconds at each repeat in spair (X1.rows = 0: not timed).
typedef struct {
    double *X, *W, *H, *G, *pair; // pair [reps]
    ad_coded X1;
    uint8_t *codes1;
    double *W1, *spair; // W1 [785, 300], spair [reps]
    double tab[256];
} bare_layer;
static void bare_layer_time(void *ctx, int r) {
    bare_layer *b = ctx;
    double t0 = bench_now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 5000, 300, 784, 1.0, b->X, 784, b->W, 300,
                0.0, b->H, 300);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 784, 300, 5000, 1.0, b->X, 784, b->H, 300,
                0.0, b->G, 300);
    b->pair[r] = bench_now() - t0;
    if (!b->X1.rows) return;
    t0 = bench_now();
    int th = ad_thin_default_threads();
    ad_sparse_matmul(AD_THIN_AUTO, th, NULL, &b->X1, 0, 300, b->W1, 300, b->H);
    ad_sparse_matmul(AD_THIN_AUTO, th, NULL, &b->X1, 1, 300, b->H, 300, b->G);
    b->spair[r] = bench_now() - t0;
}

// b->X1: the default training set (5000 images) with a column of ones, and its nonzeros; its
// rows left 0 when the data or memory are missing.
static void bare_sparse_setup(bare_layer *b, int reps) {
    mdl_hc_params p = mdl_hc_default_params();
    mdl_hc_data hc;
    char err[300];
    if (mdl_hc_load(MDL_FASHION_MNIST_DIR, &p, &hc, err, sizeof err)) return;
    int n = hc.train.n, d = hc.train.d, w = d + 1, one = 255;
    b->codes1 = malloc((size_t)n * w);
    b->W1 = malloc(sizeof(double) * (size_t)w * 300);
    b->spair = calloc((size_t)reps, sizeof(double));
    if (b->codes1 && b->W1 && b->spair && hc.train.Xc.table[one] == 1.0) {
        for (int i = 0; i < n; i++) {
            memcpy(b->codes1 + (size_t)i * w, hc.train.Xc.codes + (size_t)i * d, (size_t)d);
            b->codes1[(size_t)i * w + d] = (uint8_t)one;
        }
        for (int i = 0; i < w * 300; i++) b->W1[i] = 0.01 * (i % 7 - 3);
        memcpy(b->tab, hc.train.Xc.table, sizeof b->tab);
        b->X1 = (ad_coded){n, w, b->codes1, b->tab, NULL, NULL, NULL};
        b->X1.nz = ad_coded_nz_make(&b->X1, NULL, 0);
        if (!b->X1.nz) b->X1.rows = 0;
    }
    mdl_hc_free(&hc);
}

// The 2-layer model (hidden 300, ReLU), RHG with K = 20. Its first layer's products skip the
// pixels' zeros (sparse=1, the default; autodiff/sparse.c); the floor is the dense one all the
// same: 4 products per LL step (X W_1 and X^T G forward, X V and X^T G' in the sweep) timed bare
// by cblas after each round (the same load). Alternated with it: the model with those products
// on cblas (sparse=0), with the keep budget of before (64 MiB, here graph_mb=4), where the
// sweep computes X W_1 again, a 5th, and with the pool's threads sleeping at once between jobs.
static void bench_hyperclean_mlp(const bench_opts *o, const mdl_model *mm, const mdl_model *md,
                                 double peak) {
    const int K = 20;
    const hc_variant var[4] = {{mm, 1, 1, "ll_iters=20", 0}, {mm, 1, 1, "ll_iters=20 graph_mb=4", 0},
                               {md, 1, 1, "ll_iters=20", 0}, {mm, 1, 1, "ll_iters=20", 1}};
    int reps = o->quick ? 1 : 3;
    double t[4] = {NAN, NAN, NAN, NAN}, prod[4], n_prod[4];
    char kernel[64] = "?";
    bare_layer b = {.X = calloc(5000 * 784, sizeof(double)), .W = calloc(784 * 300, sizeof(double)),
                    .H = calloc(5000 * 300, sizeof(double)), .G = calloc(785 * 300, sizeof(double)),
                    .pair = calloc((size_t)reps, sizeof(double))};
    if (b.X && b.W && b.H && b.G && b.pair) {
        for (int i = 0; i < 5000 * 784; i++) b.X[i] = (i % 256) / 255.0;
        for (int i = 0; i < 784 * 300; i++) b.W[i] = 0.01 * (i % 7 - 3);
        bare_sparse_setup(&b, reps);
        hc_iteration(var, 4, "rhg", reps, t, prod, n_prod, kernel, bare_layer_time, &b);
    } else {
        printf("(d) hyper-cleaning, 2 layers: out of memory\n");
    }
    if (!isnan(t[0])) {
        double torch = o->torch[TORCH_HC_MLP], pair = bench_median(b.pair, reps), floor_s = 2.0 * K * pair;
        double gflop = 2e-9 * 5000 * 784 * 300;
        printf("(d) hyper-cleaning 5000 x 784 x 300 x 10, 2 layers (ReLU), rhg (K = %d): %.3f s per UL iteration"
               " (median of %d), %.0f%% in products; PyTorch 1.13 %s %.2f s: %.2fx faster (target >= 1.5x%s)\n",
               K, t[0], reps, 100 * prod[0] / t[0], torch_where(o), torch, torch / t[0],
               verdict(o, torch / t[0], 1.5));
        printf("    floor: 4 first-layer products per LL step, timed bare by cblas after each round (%.1f"
               " GFLOP/s; dgemm peak %.1f) = %.3f s: %.2fx the floor (target <= 1.3x); %.1f products over"
               " the data per LL step\n", 2 * gflop / pair, peak, floor_s, t[0] / floor_s, n_prod[0] / K);
        // every product's time counts (the second layer's too: ~1/78 of the FLOPs), so a bound;
        // dense-equivalent: the FLOPs of the product with every entry, as the floor counts them
        double in_tape = gflop * n_prod[0] / prod[0];
        printf("    in the tape: %.0f products over the data per UL iteration, %.2f ms each on average, at"
               " least %.1f GFLOP/s dense-equivalent, %.0f%% of the dgemm peak %.1f\n", n_prod[0],
               1e3 * prod[0] / n_prod[0], in_tape, 100 * in_tape / peak, peak);
        if (b.X1.rows) {
            double nzf = (double)ad_coded_nz_count(b.X1.nz) / ((double)b.X1.rows * b.X1.cols);
            double sp = bench_median(b.spair, reps);
            printf("    the first layer's products skip X1 = [X, 1]'s zeros (%.1f%% of its entries): the pair"
                   " X1 W_1, X1^T G timed bare %.2f ms (%.1f GFLOP/s dense-equivalent, %.1f on the"
                   " nonzeros; cblas's pair %.2f ms, %.2fx); its bits are the ordered fma loop's\n",
                   100 * (1 - nzf), 1e3 * sp, 2 * gflop * 785 / 784 / sp, 2 * gflop * 785 / 784 * nzf / sp,
                   1e3 * pair, pair / sp);
        }
        printf("    with those products on cblas (sparse=0): %.3f s (%.2fx), %.2f ms a product over the data\n",
               t[2], t[2] / t[0], 1e3 * prod[2] / n_prod[2]);
        printf("    with the keep budget of before (64 MiB): %.3f s (%.2fx), %.1f products per LL step\n",
               t[1], t[1] / t[0], n_prod[1] / K);
        printf("    with the pool's threads sleeping at once between jobs (spin 0): %.3f s (%.2fx)\n", t[3],
               t[3] / t[0]);
    }
    free(b.X), free(b.W), free(b.H), free(b.G), free(b.pair);
    ad_coded_nz_free((ad_coded_nz *)b.X1.nz), free(b.codes1), free(b.W1), free(b.spair);
}

static void bench_hyperclean(const bench_opts *o, double peak) {
    mdl_model mb, md, mm;
    char err[400];
    if (mdl_make_named("hyperclean", "pixels=bytes", &mb, err, sizeof err)) {
        printf("(d) hyper-cleaning: skipped: %s\n", err);
        return;
    }
    if (mdl_make_named("hyperclean", "pixels=doubles", &md, err, sizeof err)) {
        printf("(d) hyper-cleaning: skipped: %s\n", err);
        mdl_free(&mb);
        return;
    }
    mdl_model mt;
    int thin = !mdl_make_named("hyperclean", "pixels=bytes strips=0", &mt, err, sizeof err);
    bench_hyperclean_linear(o, &mb, &md, thin ? &mt : NULL, peak);
    if (thin) mdl_free(&mt);
    mdl_free(&md);
    mdl_free(&mb);
    if (mdl_make_named("hyperclean", "model=mlp hidden=300", &mm, err, sizeof err)) {
        printf("(d) hyper-cleaning, 2 layers: skipped: %s\n", err);
        return;
    }
    if (mdl_make_named("hyperclean", "model=mlp hidden=300 sparse=0", &md, err, sizeof err)) {
        printf("(d) hyper-cleaning, 2 layers: skipped: %s\n", err);
        mdl_free(&mm);
        return;
    }
    bench_hyperclean_mlp(o, &mm, &md, peak);
    mdl_free(&md);
    mdl_free(&mm);
}

void bench_bilevel(const bench_opts *o) {
    printf("bilevel benchmark (OpenBLAS %s, core %s, %d threads)\n", openblas_get_config(),
           openblas_get_corename(), openblas_get_num_threads());
    if (!o->reference_only) bench_memory(o); // first, and in a child: max-RSS is process-wide
    bench_quadratic(o);
    if (!o->reference_only) bench_ptt(o);
    double peak = bench_dgemm_peak(o->quick);
    printf("dgemm peak (cblas, [1024, 1024]^2, best of a few): %.1f GFLOP/s\n", peak);
    bench_hyperclean(o, peak);
    if (!o->reference_only) bench_fhg(o);
}
