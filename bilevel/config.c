// The configuration of a run: a method type with its params, the LL dynamics it unrolls with
// its params, and the UL loop's own settings. Every setting is reached by name through the three
// groups' tables; nothing here knows a method's fields.
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const optimizers[] = {"plain", "momentum", "adam", NULL};

const blo_setting blo_solve_settings[] = {
    {"ul_iters", BLO_SET_INT, offsetof(blo_solve_params, T), 1, INT_MAX, BLO_SET_LENGTH, NULL, 0,
     "T", "UL iterations"},
    BLO_ROW_CHOICE(blo_solve_params, opt, "optimizer", optimizers, "o", "UL steps: plain, momentum or adam"),
    BLO_ROW_DBL(blo_solve_params, lr_x, "lr_x", 0, INFINITY, BLO_SET_LO_OPEN, "a", "UL step size for x"),
    BLO_ROW_DBL(blo_solve_params, lr_z, "lr_z", 0, INFINITY, BLO_SET_LO_OPEN, "a",
                "step size for z (IA) or y (bome)"),
    BLO_ROW_DBL(blo_solve_params, momentum, "momentum", 0, 1, BLO_SET_HI_OPEN, "b", "UL heavy-ball weight"),
    BLO_ROW_DBL(blo_solve_params, beta1, "beta1", 0, 1, BLO_SET_HI_OPEN, "b", "Adam's first-moment decay"),
    BLO_ROW_DBL(blo_solve_params, beta2, "beta2", 0, 1, BLO_SET_HI_OPEN, "b", "Adam's second-moment decay"),
    BLO_ROW_DBL(blo_solve_params, adam_eps, "adam_eps", 0, INFINITY, BLO_SET_LO_OPEN, "e", "Adam's epsilon"),
    BLO_ROW_INT(blo_solve_params, seed, "solver_seed", 0, INT_MAX, "S", "seed of the solver's generator (methods that draw)"),
    BLO_ROW_END,
};

blo_solve_params blo_solve_default_params(void) {
    return (blo_solve_params){.T = 100, .opt = BLO_OPT_PLAIN, .lr_x = 0.1, .lr_z = 0.1,
                              .momentum = 0.9, .beta1 = 0.9, .beta2 = 0.999, .adam_eps = 1e-8};
}

blo_status blo_check_memory(double count, double each, const char *what, blo_error *err) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double have = pages > 0 && page > 0 ? (double)pages * (double)page : INFINITY;
    double need = count * each;
    if (need > have || need > (double)SIZE_MAX / 2)
        return blo_fail(err, BLO_ENOMEM, "%s need %.3g GiB; this machine has %.3g GiB", what,
                        need / 1073741824.0, have / 1073741824.0);
    return BLO_OK;
}

blo_config *blo_config_new(const blo_method_type *m, blo_error *err) {
    if (!m || !m->name || !m->init || !m->direction || !m->solution || !m->free ||
        (m->params_size && !m->defaults)) {
        blo_fail(err, BLO_EARG, "config: the method type is NULL or lacks name, init, direction, "
                 "solution, free or defaults");
        return NULL;
    }
    blo_config *c = calloc(1, sizeof *c);
    void *mp = malloc(m->params_size ? m->params_size : 1);
    if (!c || !mp) {
        free(c), free(mp);
        blo_fail(err, BLO_ENOMEM, "config: out of memory");
        return NULL;
    }
    c->method = m;
    c->method_params = mp;
    if (m->params_size) memcpy(mp, m->defaults, m->params_size);
    c->solve = blo_solve_default_params();
    if (m->needs & BLO_NEEDS_DYNAMICS) {
        const blo_dynamics_type *d = blo_dynamics_find(m->dynamics);
        if (!d || blo_config_set_dynamics(c, d, err)) {
            if (!d) blo_fail(err, BLO_EARG, "method %s: unknown default dynamics '%s'", m->name,
                             m->dynamics ? m->dynamics : "");
            blo_config_free(c);
            return NULL;
        }
    }
    blo_ok(err);
    return c;
}

blo_config *blo_config_copy(const blo_config *c, blo_error *err) {
    if (!c) {
        blo_fail(err, BLO_EARG, "config: NULL");
        return NULL;
    }
    blo_config *k = blo_config_new(c->method, err);
    if (!k) return NULL;
    size_t n = c->method->params_size;
    if (n) memcpy(k->method_params, c->method_params, n);
    k->dyn = c->dyn;
    memcpy(k->dyn_params, c->dyn_params, sizeof k->dyn_params);
    k->solve = c->solve;
    return k;
}

void blo_config_free(blo_config *c) {
    if (!c) return;
    free(c->method_params);
    free(c);
}

blo_status blo_config_set_dynamics(blo_config *c, const blo_dynamics_type *d, blo_error *err) {
    if (!c || !d || !d->name || !d->make || (d->params_size && !d->defaults))
        return blo_fail(err, BLO_EARG, "config: NULL or incomplete dynamics type");
    if (!(c->method->needs & BLO_NEEDS_DYNAMICS))
        return blo_fail(err, BLO_EARG, "method %s unrolls no LL dynamics", c->method->name);
    if (d->params_size > sizeof c->dyn_params)
        return blo_fail(err, BLO_EARG, "dynamics %s: params of %zu bytes (at most %d)", d->name,
                        d->params_size, BLO_DYN_PARAMS_MAX);
    c->dyn = d;
    memset(c->dyn_params, 0, sizeof c->dyn_params);
    if (d->params_size) memcpy(c->dyn_params, d->defaults, d->params_size);
    return blo_ok(err);
}

int blo_config_groups(const blo_config *c, blo_settings_group g[3]) {
    blo_config *m = (blo_config *)c; // the groups point into c for setting through them
    int n = 0;
    g[n++] = (blo_settings_group){"solver", "solver", blo_solve_settings, &m->solve};
    g[n++] = (blo_settings_group){"method", c->method->name, c->method->settings, m->method_params};
    if (c->dyn) g[n++] = (blo_settings_group){"dynamics", c->dyn->name, c->dyn->settings, m->dyn_params};
    return n;
}

// The group and row of a setting, searched solver, method, dynamics.
static const blo_setting *find(const blo_config *c, const char *name, void **params) {
    blo_settings_group g[3];
    int n = blo_config_groups(c, g);
    for (int i = 0; i < n; i++) {
        const blo_setting *r = blo_setting_find(g[i].table, name);
        if (r) {
            *params = g[i].params;
            return r;
        }
    }
    return NULL;
}

int blo_config_has(const blo_config *c, const char *name) {
    void *p;
    return c && name && (!strcmp(name, "dynamics") ? c->dyn != NULL : find(c, name, &p) != NULL);
}

blo_status blo_config_set(blo_config *c, const char *name, const char *value, blo_error *err) {
    if (!c || !name || !value) return blo_fail(err, BLO_EARG, "config: NULL argument");
    if (!strcmp(name, "dynamics")) {
        const blo_dynamics_type *d = blo_dynamics_find(value);
        if (!d) {
            char list[160] = "";
            size_t len = 0;
            for (const blo_dynamics_type *const *t = blo_dynamics_registry(); *t && len < sizeof list; t++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", (*t)->name);
            return blo_fail(err, BLO_EARG, "dynamics: bad value '%s' (one of %s)", value, list);
        }
        return blo_config_set_dynamics(c, d, err);
    }
    void *params;
    const blo_setting *r = find(c, name, &params);
    if (!r)
        return blo_fail(err, BLO_EARG, "'%s' is not a setting of method %s%s%s", name, c->method->name,
                        c->dyn ? " or dynamics " : "", c->dyn ? c->dyn->name : "");
    return blo_setting_parse(r, params, value, err);
}

const char *blo_config_get(const blo_config *c, const char *name, char *buf, size_t n) {
    if (!c || !name) return NULL;
    if (!strcmp(name, "dynamics")) {
        if (!c->dyn) return NULL;
        snprintf(buf, n, "%s", c->dyn->name);
        return buf;
    }
    void *params;
    const blo_setting *r = find(c, name, &params);
    return r ? blo_setting_format(r, params, buf, n) : NULL;
}

const blo_method_type *blo_config_method(const blo_config *c) { return c ? c->method : NULL; }
const blo_dynamics_type *blo_config_dynamics(const blo_config *c) { return c ? c->dyn : NULL; }
const blo_solve_params *blo_config_solve_params(const blo_config *c) { return &c->solve; }

unsigned blo_config_needs(const blo_config *c) {
    return c->method->needs | (c->method->needs_of ? c->method->needs_of(c->method_params) : 0);
}

blo_status blo_config_resolve(blo_config *c, int n_y, blo_error *err) {
    if (!c) return blo_fail(err, BLO_EARG, "config: NULL");
    blo_settings_group g[3];
    int n = blo_config_groups(c, g);
    for (int i = 0; i < n; i++) {
        char owner[96];
        snprintf(owner, sizeof owner, "%s%s%s", i ? g[i].owner : "", i ? " " : "", g[i].name);
        blo_status st = blo_settings_check(g[i].table, g[i].params, owner, err);
        if (st) return st;
    }
    blo_dynamics d, *dp = NULL;
    if (c->dyn) d = c->dyn->make(n_y > 0 ? n_y : 1, c->dyn_params), dp = &d;
    if (c->method->resolve) return c->method->resolve(c->method_params, dp, err);
    return blo_ok(err);
}

static blo_status set_dynamics_only(const char *name, const char *value, void *ctx, blo_error *err) {
    return strcmp(name, "dynamics") ? BLO_OK : blo_config_set(ctx, name, value, err);
}

static blo_status set_others(const char *name, const char *value, void *ctx, blo_error *err) {
    return strcmp(name, "dynamics") ? blo_config_set(ctx, name, value, err) : BLO_OK;
}

blo_status blo_config_apply(blo_config *c, const char *assignments, blo_error *err) {
    if (!c) return blo_fail(err, BLO_EARG, "config: NULL");
    blo_status st = blo_assignments_each(assignments, set_dynamics_only, c, err);
    return st ? st : blo_assignments_each(assignments, set_others, c, err);
}
