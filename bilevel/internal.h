// Internals shared by the bilevel sources: setting a blo_error, borrowing a tape, turning a tape
// error into a blo_error. Not installed; users include blo.h only.
#ifndef HYPERTAPE_BLO_INTERNAL_H
#define HYPERTAPE_BLO_INTERNAL_H

#include "blo.h"

#include <stdbool.h>

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

#endif
