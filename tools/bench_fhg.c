// `hypertape bench bilevel`, case (e): forward against reverse mode. fhg carries n_x tangents
// through the K LL steps (n_x Jacobian-vector products per step, O(S n_x) memory); rhg sweeps
// back once (one vector-Jacobian product per step, K + 1 states or the graph kept). On the
// closed-form quadratic (problem quadratic, its m setting is n_x) with K = 1000 GD steps, one UL
// iteration's direction of each, as n_x grows: where forward mode stops paying, with a small n_y
// (the cost per recorded node) and a larger one (the products with A). Medians over
// alternating repeats; the tape's peak bytes show the memory side.
#include "bench.h"

#include "../autodiff/ad.h"
#include "../bilevel/blo_extra.h"
#include "../models/models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { FHG_K = 1000 };

// A solver of method on m with the quadratic's paper settings and K = FHG_K (NULL: said why).
static blo_solver *solver_for(const mdl_model *m, const char *method) {
    char err[400], set[64];
    blo_error e;
    blo_config *c = mdl_paper_config(&mdl_quadratic_entry, blo_method_find(method), NULL, err, sizeof err);
    snprintf(set, sizeof set, "ll_iters=%d", FHG_K);
    blo_solver *s = c && !blo_config_apply(c, set, &e) ? blo_solver_new(&m->prob, c, m->x0[0], m->y0[0], NULL, &e)
                                                       : NULL;
    if (!s) printf("    %s: %s\n", method, c ? e.msg : err);
    blo_config_free(c);
    return s;
}

// Median seconds of one direction of each of the two solvers, alternating which goes first, after
// one untimed direction each.
static void time_pair(blo_solver *s[2], int reps, double sec[2]) {
    double *t = malloc(sizeof(double) * 2 * (size_t)reps);
    if (!t) {
        sec[0] = sec[1] = NAN;
        return;
    }
    blo_error e;
    blo_record rec;
    for (int k = 0; k < 2; k++) blo_solver_direction(s[k], &rec, &e); // warm: the tapes grown once
    for (int r = 0; r < reps; r++)
        for (int k0 = 0; k0 < 2; k0++) {
            int k = (k0 + r) % 2;
            double start = bench_now();
            blo_solver_direction(s[k], &rec, &e);
            t[k * reps + r] = bench_now() - start;
        }
    for (int k = 0; k < 2; k++) sec[k] = bench_median(t + k * reps, reps);
    free(t);
}

// One row: n_y, n_x.
static void fhg_row(int n_y, int n_x, int reps) {
    mdl_model m;
    char err[400], set[64];
    snprintf(set, sizeof set, "n=%d m=%d", n_y, n_x);
    if (mdl_make_named("quadratic", set, &m, err, sizeof err)) {
        printf("    n_y = %d, n_x = %d: skipped: %s\n", n_y, n_x, err);
        return;
    }
    blo_solver *s[2] = {solver_for(&m, "fhg"), solver_for(&m, "rhg")};
    if (s[0] && s[1]) {
        double sec[2];
        time_pair(s, reps, sec);
        printf("    n_y = %3d, n_x = %3d: fhg %8.2f ms (%5.1f us per JVP), rhg %6.2f ms: fhg / rhg %6.2f; "
               "tape peak fhg %.2f MB, rhg %.2f MB\n", n_y, n_x, 1e3 * sec[0],
               1e6 * sec[0] / ((double)FHG_K * n_x), 1e3 * sec[1], sec[0] / sec[1],
               ad_tape_peak_bytes(blo_solver_tape(s[0])) / 1e6, ad_tape_peak_bytes(blo_solver_tape(s[1])) / 1e6);
    }
    blo_solver_free(s[0]);
    blo_solver_free(s[1]);
    mdl_free(&m);
}

void bench_fhg(const bench_opts *o) {
    // n_y = 10: per-node overhead; n_y = 300: the products with A (one per JVP, two per RHG step)
    static const int rows[][2] = {{10, 1}, {10, 2}, {10, 4}, {10, 10}, {10, 100}, {300, 1}, {300, 2}, {300, 10}};
    int reps = o->quick ? 1 : 3;
    printf("(e) forward (fhg) against reverse mode (rhg), the quadratic with K = %d GD steps, one UL "
           "iteration's direction, median of %d:\n", FHG_K, reps);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (!o->quick || rows[i][1] <= 10) fhg_row(rows[i][0], rows[i][1], reps); // n_x = 100 takes seconds
}
