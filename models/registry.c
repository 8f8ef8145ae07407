// The model registry, making and freeing models, and the NAME=VALUE setting parsers models use.
#include "models.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const mdl_entry *const all_entries[] = {
    &mdl_counterexample_entry, &mdl_llc_entry, &mdl_lls_entry, &mdl_nonconvex_entry, &mdl_sin_entry,
    &mdl_coreset_entry, &mdl_minimax_entry, &mdl_degenerate_entry, &mdl_pl_entry,
    &mdl_quadratic_entry, &mdl_hyperclean_entry, NULL,
};

const mdl_entry *const *mdl_registry(void) { return all_entries; }

const mdl_entry *mdl_find(const char *name) {
    for (const mdl_entry *const *e = mdl_registry(); *e; e++)
        if (!strcmp((*e)->name, name)) return *e;
    return NULL;
}

int mdl_make(const char *name, int n_set, const char *const *set, mdl_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    const mdl_entry *e = name ? mdl_find(name) : NULL;
    if (!e) return mdl_fail(err, errlen, "unknown problem '%s' (hypertape list shows them)", name ? name : "");
    m->F_star = NAN;
    if (e->make(m, n_set, set, err, errlen)) {
        mdl_free(m);
        return -1;
    }
    m->name = e->name;
    return 0;
}

void mdl_free(mdl_model *m) {
    if (m->free_data) m->free_data(m);
    memset(m, 0, sizeof *m);
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

// The value of "key=value" among the settings, or NULL.
static const char *lookup(int n_set, const char *const *set, const char *key) {
    size_t k = strlen(key);
    for (int i = n_set - 1; i >= 0; i--) // the last setting wins
        if (!strncmp(set[i], key, k) && set[i][k] == '=') return set[i] + k + 1;
    return NULL;
}

int mdl_set_double(int n_set, const char *const *set, const char *key, double *out, char *err, size_t errlen) {
    const char *v = lookup(n_set, set, key);
    if (!v) return 0;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(d))
        return mdl_fail(err, errlen, "setting %s=%s: not a finite number", key, v);
    *out = d;
    return 0;
}

int mdl_set_int(int n_set, const char *const *set, const char *key, int *out, char *err, size_t errlen) {
    const char *v = lookup(n_set, set, key);
    if (!v) return 0;
    char *end;
    errno = 0;
    long d = strtol(v, &end, 10);
    if (!*v || *end || errno || d < -1000000000L || d > 1000000000L)
        return mdl_fail(err, errlen, "setting %s=%s: not an integer", key, v);
    *out = (int)d;
    return 0;
}

int mdl_set_string(int n_set, const char *const *set, const char *key, const char **out) {
    const char *v = lookup(n_set, set, key);
    if (v) *out = v;
    return 0;
}

int mdl_check_keys(const char *model, int n_set, const char *const *set, const char *const *keys,
                   char *err, size_t errlen) {
    for (int i = 0; i < n_set; i++) {
        const char *eq = strchr(set[i], '=');
        if (!eq) return mdl_fail(err, errlen, "setting '%s' for problem %s is not NAME=VALUE", set[i], model);
        int known = 0;
        for (int k = 0; keys && keys[k]; k++)
            known |= strlen(keys[k]) == (size_t)(eq - set[i]) && !strncmp(keys[k], set[i], (size_t)(eq - set[i]));
        if (!known) {
            char list[256] = "";
            for (int k = 0; keys && keys[k]; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", keys[k]);
            return mdl_fail(err, errlen, "unknown setting '%.*s' for problem %s (known: %s)",
                        (int)(eq - set[i]), set[i], model, keys && keys[0] ? list : "none");
        }
    }
    return 0;
}
