// The model registry, making and freeing models, and matching the papers' settings to a method.
#include "models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const mdl_entry *const all_entries[] = {
    &mdl_counterexample_entry,
    &mdl_llc_entry,
    &mdl_lls_entry,
    &mdl_nonconvex_entry,
    &mdl_sin_entry,
    &mdl_coreset_entry,
    &mdl_minimax_entry,
    &mdl_degenerate_entry,
    &mdl_pl_entry,
    &mdl_quadratic_entry,
    &mdl_hyperclean_entry,
    &mdl_meta_entry,
    &mdl_pentagram_entry,
    &mdl_nas_entry,
    &mdl_sinusoid_entry,
    &mdl_fewshot_entry,
    NULL,
};

const mdl_entry *const *mdl_registry(void) { return all_entries; }

const mdl_entry *mdl_find(const char *name) {
    for (const mdl_entry *const *e = mdl_registry(); *e; e++)
        if (!strcmp((*e)->name, name)) return *e;
    return NULL;
}

int mdl_make(const mdl_entry *e, const void *params, mdl_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (!e) return mdl_fail(err, errlen, "mdl_make: no model entry");
    blo_error be;
    if (!params) params = e->defaults;
    if (e->params_size && blo_settings_check(e->settings, params, e->name, &be))
        return mdl_fail(err, errlen, "problem %s", be.msg);
    m->F_star = NAN;
    if (e->make(m, params, err, errlen)) {
        mdl_free(m);
        return -1;
    }
    m->name = e->name;
    return 0;
}

int mdl_make_named(const char *name, const char *settings, mdl_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    const mdl_entry *e = name ? mdl_find(name) : NULL;
    if (!e) return mdl_fail(err, errlen, "unknown problem '%s' (hypertape list shows them)", name ? name : "");
    void *params = calloc(1, e->params_size ? e->params_size : 1);
    if (!params) return mdl_fail(err, errlen, "problem %s: out of memory", e->name);
    if (e->params_size) memcpy(params, e->defaults, e->params_size);
    blo_error be;
    int rc = blo_settings_apply(e->settings, params, settings, 0, &be)
                 ? mdl_fail(err, errlen, "problem %s: %s", e->name, be.msg)
                 : mdl_make(e, params, m, err, errlen);
    free(params);
    return rc;
}

void mdl_free(mdl_model *m) {
    if (m->free_data) m->free_data(m);
    memset(m, 0, sizeof *m);
}

int mdl_paper_row_applies(const mdl_paper_row *row, const blo_method_type *m) {
    return row && row->method && (!strcmp(row->method, "*") || blo_method_find(row->method) == m);
}

int mdl_metric_find(const mdl_model *m, const char *name) {
    for (int k = 0; m && name && k < m->n_metrics; k++)
        if (!strcmp(m->metrics[k].name, name)) return k;
    return -1;
}

double mdl_x_error(const mdl_model *m, const double *x) {
    if (!m->x_star) return NAN;
    double d = 0, s = 0;
    for (int i = 0; i < m->prob.n_x; i++) {
        d += (x[i] - m->x_star[i]) * (x[i] - m->x_star[i]);
        s += m->x_star[i] * m->x_star[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

typedef struct {
    blo_config *c;
    char dynamics[64]; // the last "dynamics" named
} paper_ctx;

static blo_status find_dynamics(const char *name, const char *value, void *ctx, blo_error *err) {
    paper_ctx *p = ctx;
    (void)err;
    if (!strcmp(name, "dynamics")) snprintf(p->dynamics, sizeof p->dynamics, "%s", value);
    return BLO_OK;
}

static blo_status set_known(const char *name, const char *value, void *ctx, blo_error *err) {
    paper_ctx *p = ctx;
    if (!strcmp(name, "dynamics") || !blo_config_has(p->c, name)) return BLO_OK;
    return blo_config_set(p->c, name, value, err);
}

blo_config *mdl_paper_config(const mdl_entry *e, const blo_method_type *m, const char *dynamics,
                             char *err, size_t errlen) {
    blo_error be;
    blo_config *c = blo_config_new(m, &be);
    if (!c) {
        mdl_fail(err, errlen, "%s", be.msg);
        return NULL;
    }
    paper_ctx p = {.c = c};
    if (dynamics) snprintf(p.dynamics, sizeof p.dynamics, "%s", dynamics);
    for (const mdl_paper_row *row = e->papers; !dynamics && row && row->method; row++)
        if (mdl_paper_row_applies(row, m)) blo_assignments_each(row->settings, find_dynamics, &p, NULL);
    // a row for every method may name a dynamics that only the unrolling methods have
    blo_status st = p.dynamics[0] && blo_config_has(c, "dynamics") ? blo_config_set(c, "dynamics", p.dynamics, &be) : BLO_OK;
    for (const mdl_paper_row *row = e->papers; !st && row && row->method; row++)
        if (mdl_paper_row_applies(row, m)) st = blo_assignments_each(row->settings, set_known, &p, &be);
    if (st) {
        mdl_fail(err, errlen, "problem %s's paper settings for %s: %s", e->name, m->name, be.msg);
        blo_config_free(c);
        return NULL;
    }
    return c;
}
