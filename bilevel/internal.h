// Internals shared by the bilevel sources: setting a blo_error, borrowing a tape, turning a tape
// error into a blo_error, settings-table helpers, the configuration and the state file's byte
// streams. Not installed; users include blo.h and methods.h.
#ifndef HYPERTAPE_BLO_INTERNAL_H
#define HYPERTAPE_BLO_INTERNAL_H

#include "blo.h"
#include "methods.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

blo_status blo_fail(blo_error *err, blo_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline blo_status blo_ok(blo_error *err) {
    if (err) {
        err->status = BLO_OK;
        err->msg[0] = 0;
    }
    return BLO_OK;
}

// A tape for one call: the caller's (remembering where it was) or a private one.
typedef struct {
    ad_tape *t;
    bool own;
    ad_mark base;
} blo_tape_use;

blo_status blo_tape_acquire(blo_tape_use *u, ad_tape *given, blo_error *err);
// Rewinds the caller's tape to where it was and clears an error this call left on it; frees a
// private tape.
void blo_tape_release(blo_tape_use *u);
// If the tape holds an error, copy it into err (prefixed by where) and return its blo_status.
blo_status blo_tape_check(ad_tape *t, blo_error *err, const char *where);

// Every check a hypergradient or an unroll needs before recording anything.
blo_status blo_dynamics_validate(const blo_problem *p, const blo_dynamics *d, blo_error *err);
// Record state_0 = init(y0), step, read_y with their output shapes checked (a bad shape is recorded
// on the tape as an error naming the dynamics).
ad_var blo_rec_init(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var y0);
ad_var blo_rec_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x,
                    ad_var s);
ad_var blo_rec_read_y(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var s);

// Reversible momentum (reversible.c): the bits p per entry per step that multiplying by beta =
// j / 2^p drops (-1 if beta is not such a number with p <= BLO_REV_MAX_BITS), and whether d is
// momentum with the option on.
#define BLO_REV_MAX_BITS 24
int blo_momentum_bits(double beta);
bool blo_dynamics_reversible(const blo_dynamics *d);

// y [n] clamped to the problem's Y box.
void blo_clamp_y(const blo_problem *p, double *y);
double blo_dot(const double *a, const double *b, int n);

// ---- settings tables ----------------------------------------------------------------------------

// The most LL steps or iterations anything accepts; what memory allows is checked when a run
// is made (blo_check_memory).
#define BLO_MAX_ITERS 100000000

// BLO_ENOMEM with a clear message when count blocks of `each` bytes would not fit in this
// machine's memory (checked before allocating: an allocation the kernel overcommits would only
// fail when touched). what names them ("2000000001 LL states of 10 doubles").
blo_status blo_check_memory(double count, double each, const char *what, blo_error *err);

// ---- the configuration ------------------------------------------------------------------------------

struct blo_config {
    const blo_method_type *method;
    void *method_params;               // [method->params_size]
    const blo_dynamics_type *dyn;      // NULL when the method unrolls none
    double dyn_params[BLO_DYN_PARAMS_MAX / sizeof(double)];
    blo_solve_params solve;
};


// ---- the state file's byte streams -------------------------------------------------------------------

struct blo_writer {
    unsigned char *data;
    size_t len, cap;
    bool failed; // an allocation failed: nothing more is written
};

struct blo_reader {
    const unsigned char *data;
    size_t len, pos;
};

blo_status blo_write_doubles(blo_writer *w, const double *v, size_t n);
blo_status blo_read_doubles(blo_reader *r, double *v, size_t n);

#endif
