// Command-line parsing for `hypertape run | compare | gradcheck` and the plan of a run. The
// command's own options are one table below; every other option is a setting of a method, a
// dynamics or the solver, found in their tables (--ll-iters is ll_iters, --no-ia sets ia=0).
// Settings apply in order: the method's defaults, the problem's paper settings for it, the
// method given's dynamics and flags (rhg:nesterov+ia), then the command line; the dynamics is
// chosen first, wherever it is named, so its settings apply to it.
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { RUN = 1, COMPARE = 2, GRADCHECK = 4, ALL = 7 };

typedef struct {
    const char *name;
    const char *arg;  // the value's name; NULL: a flag
    unsigned cmds;    // the commands that take it
    const char *help;
} fixed_opt;

static const fixed_opt fixed[] = {
    {"--method", "M", RUN | GRADCHECK, "the method: METHOD[:DYNAMICS][+FLAG|+noFLAG ...] (rhg:nesterov+ia)"},
    {"--methods", "a,b,c", COMPARE, "the methods to compare, each as --method takes it"},
    {"--dynamics", "D", ALL, "the LL dynamics (hypertape list shows them)"},
    {"--set", "NAME=VALUE", ALL, "a problem setting (hypertape list PROBLEM shows them)"},
    {"--start", "X0,..,Y0,..", ALL, "start point: x then y, comma-separated"},
    {"--start-index", "i", ALL, "which of the problem's start points (default 0)"},
    {"--seed", "S", ALL, "the problem's seed (its seed setting)"},
    {"--trace", "FILE.csv", RUN, "one line per UL iteration, then one for the final iterate"},
    {"--plot", "FILE.png", COMPARE, "the convergence figure, drawn with gnuplot"},
    {"--json", NULL, RUN | GRADCHECK, "one JSON object on stdout"},
    {"--settings", "FILE.json", RUN | GRADCHECK,
     "repeat an earlier run: its JSON report (or its settings object); options here apply on top"},
    {"--checkpoint", "FILE", RUN, "save the run's state to FILE at the end, on SIGINT / SIGTERM and "
     "every --checkpoint-every iterations"},
    {"--checkpoint-every", "N", RUN, "save every N UL iterations (with --checkpoint)"},
    {"--resume", "FILE", RUN, "continue the run saved in FILE (--ul-iters T: its new length)"},
    {"--rtol", "r", GRADCHECK, "relative tolerance of each entry (default 1e-6)"},
    {"--atol", "a", GRADCHECK, "absolute tolerance of each entry (default 1e-9)"},
};
enum { N_FIXED = sizeof fixed / sizeof fixed[0] };

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static unsigned cmd_bit(const char *cmd) {
    return !strcmp(cmd, "run") ? RUN : !strcmp(cmd, "compare") ? COMPARE : GRADCHECK;
}

// ---- the settings tables' options ------------------------------------------------------------------

// The row named name in the solver's, any method's or any dynamics' table (the first found).
static const blo_setting *any_setting(const char *name) {
    const blo_setting *r = blo_setting_find(blo_solve_settings, name);
    for (const blo_method_type *const *m = blo_method_registry(); !r && *m; m++)
        r = blo_setting_find((*m)->settings, name);
    for (const blo_dynamics_type *const *d = blo_dynamics_registry(); !r && *d; d++)
        r = blo_setting_find((*d)->settings, name);
    return r;
}

// "--ll-iters" -> "ll_iters" (at most n - 1 characters).
static void option_to_name(const char *opt, char *name, size_t n) {
    size_t i = 0;
    for (const char *p = opt + 2; *p && i + 1 < n; p++) name[i++] = *p == '-' ? '_' : *p;
    name[i] = 0;
}

static int parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int parse_positive(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < 0) return -1;
    *out = v;
    return 0;
}

// One of the command's own options with its value (NULL for a flag).
static int take_fixed(const fixed_opt *o, const char *val, cli_args *a, char *err, size_t n) {
    const char *s = o->name;
    if (o->arg && !*val && strcmp(s, "--set"))
        return fail(err, n, "%s needs a non-empty value", s);
    if (!strcmp(s, "--method")) a->method = val;
    else if (!strcmp(s, "--methods")) a->methods = val;
    else if (!strcmp(s, "--dynamics")) a->opts[a->n_opts++] = (cli_assign){"dynamics", val, s};
    else if (!strcmp(s, "--set")) {
        if (!strchr(val, '=') || *val == '=') return fail(err, n, "--set %s: expected NAME=VALUE", val);
        a->sets[a->n_sets++] = val;
    } else if (!strcmp(s, "--start")) a->start = val;
    else if (!strcmp(s, "--start-index")) {
        if (parse_int(val, 0, 1000, &a->start_index)) return fail(err, n, "--start-index: bad value '%s'", val);
        a->has_start_index = 1;
    } else if (!strcmp(s, "--seed")) a->seed = val;
    else if (!strcmp(s, "--trace")) a->trace = val;
    else if (!strcmp(s, "--plot")) a->plot = val;
    else if (!strcmp(s, "--json")) a->json = 1;
    else if (!strcmp(s, "--settings")) a->settings = val;
    else if (!strcmp(s, "--checkpoint")) a->checkpoint = val;
    else if (!strcmp(s, "--checkpoint-every")) {
        if (parse_int(val, 1, INT_MAX, &a->checkpoint_every))
            return fail(err, n, "--checkpoint-every: bad value '%s' (an integer >= 1)", val);
    } else if (!strcmp(s, "--resume")) a->resume = val;
    else if (!strcmp(s, "--rtol") || !strcmp(s, "--atol")) {
        if (parse_positive(val, s[2] == 'r' ? &a->rtol : &a->atol))
            return fail(err, n, "%s: bad value '%s' (a number >= 0)", s, val);
    }
    return 0;
}

static const fixed_opt *find_fixed(const char *name) {
    for (int i = 0; i < N_FIXED; i++)
        if (!strcmp(fixed[i].name, name)) return &fixed[i];
    return NULL;
}

void cli_args_free(cli_args *a) {
    free(a->mem);
    memset(a, 0, sizeof *a);
}

int cli_parse(const char *cmd, int argc, char **argv, cli_args *a, char *err, size_t n) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->rtol = 1e-6, a->atol = 1e-9;
    // the lists hold at most one entry per argument
    a->mem = malloc(((size_t)argc + 1) * (sizeof(cli_assign) + sizeof(char *)));
    if (!a->mem) return fail(err, n, "out of memory");
    a->opts = a->mem;
    a->sets = (const char **)(void *)(a->opts + argc + 1);
    unsigned bit = cmd_bit(cmd);
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i], *eq = strchr(s, '=');
        if (s[0] != '-') {
            if (a->problem) return fail(err, n, "unexpected argument '%s' (the problem is %s)", s, a->problem);
            a->problem = s;
            continue;
        }
        char opt[64];
        size_t len = s[1] == '-' && eq ? (size_t)(eq - s) : strlen(s);
        if (len >= sizeof opt || s[1] != '-') return fail(err, n, "unknown option '%s' (hypertape %s --help lists them)", s, cmd);
        memcpy(opt, s, len);
        opt[len] = 0;
        const char *val = eq && s[1] == '-' ? eq + 1 : NULL;
        const fixed_opt *f = find_fixed(opt);
        char name[64];
        option_to_name(opt, name, sizeof name);
        const blo_setting *r = f ? NULL : any_setting(name);
        const blo_setting *neg = f || r || strncmp(name, "no_", 3) ? NULL : any_setting(name + 3);
        if (neg && neg->type != BLO_SET_BOOL) neg = NULL;
        if (!f && !r && !neg) return fail(err, n, "unknown option '%s' (hypertape %s --help lists them)", opt, cmd);
        if (f && !(f->cmds & bit)) return fail(err, n, "%s is not an option of %s", opt, cmd);
        bool takes = f ? f->arg != NULL : neg ? false : r->type != BLO_SET_BOOL;
        if (takes && !val) {
            if (i + 1 >= argc) return fail(err, n, "%s needs a value", opt);
            val = argv[++i];
        } else if (!takes && val && (f || neg)) {
            return fail(err, n, "%s takes no value", opt);
        }
        if (f) {
            if (take_fixed(f, val, a, err, n)) return -1;
        } else {
            // the setting's own name points into its table: it outlives argv's copies
            a->opts[a->n_opts++] = (cli_assign){neg ? neg->name : r->name, neg ? "0" : val ? val : "1", s};
        }
    }
    if ((a->resume || a->settings) && (a->problem || a->method))
        return fail(err, n, "%s %s holds the problem and the method; give neither", a->resume ? "--resume" : "--settings",
                    a->resume ? a->resume : a->settings);
    if (a->resume) {
        if (a->settings) return fail(err, n, "--resume and --settings: the state file holds its settings");
        return 0;
    }
    if (!a->problem && !a->settings) return fail(err, n, "no problem given (hypertape list shows them)");
    if (a->problem && !mdl_find(a->problem)) return fail(err, n, "unknown problem '%s' (hypertape list shows them)", a->problem);
    if (a->checkpoint_every && !a->checkpoint) return fail(err, n, "--checkpoint-every needs --checkpoint");
    if (!a->settings && (bit == COMPARE ? !a->methods : !a->method))
        return fail(err, n, "%s is required", bit == COMPARE ? "--methods" : "--method");
    return 0;
}

// ---- the plan ---------------------------------------------------------------------------------------

typedef enum { FROM_GIVEN, FROM_COMMAND } source;

// One NAME=VALUE of the method as given or of the command line on its way to the configuration (made
// with the problem's paper settings), with where it came from, for how an error is worded.
typedef struct {
    char *name, *value; // owned
    const char *option; // --ll-iters as typed (FROM_COMMAND)
    source from;
} assign;

typedef struct {
    assign *v;
    int n, cap;
    const char *given;         // the method as given (messages)
} assign_list;

static void list_free(assign_list *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i].name), free(l->v[i].value);
    free(l->v);
}

static blo_status push(assign_list *l, const char *name, const char *value, const char *option, source from) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        assign *m = realloc(l->v, sizeof *m * (size_t)cap);
        if (!m) return BLO_ENOMEM;
        l->v = m, l->cap = cap;
    }
    assign a = {strdup(name), strdup(value), option, from};
    if (!a.name || !a.value) {
        free(a.name), free(a.value);
        return BLO_ENOMEM;
    }
    l->v[l->n++] = a;
    return BLO_OK;
}

// The tail of the method as given: ":DYNAMICS" and "+FLAG" / "+noFLAG" words.
static int push_given(assign_list *l, const char *given, char *err, size_t n) {
    const char *p = given + strcspn(given, ":+");
    while (*p) {
        char word[64];
        size_t len = strcspn(p + 1, ":+");
        if (len >= sizeof word || len == 0) return fail(err, n, "%s: a bad word after '%c'", given, *p);
        memcpy(word, p + 1, len);
        word[len] = 0;
        const blo_setting *r = any_setting(word), *neg = strncmp(word, "no", 2) ? NULL : any_setting(word + 2);
        blo_status st;
        if (*p == ':') st = push(l, "dynamics", word, NULL, FROM_GIVEN);
        else if (r && r->type == BLO_SET_BOOL) st = push(l, word, "1", NULL, FROM_GIVEN);
        else if (neg && neg->type == BLO_SET_BOOL) st = push(l, word + 2, "0", NULL, FROM_GIVEN);
        else return fail(err, n, "%s: unknown variant '+%s' (a flag of the method: +ia, +ptt, +noptt, ...)", given, word);
        if (st) return fail(err, n, "out of memory");
        p += 1 + len;
    }
    return 0;
}

// A setting's parse error as the command line says it: "--ll-iters: bad value '0' (...)".
static int setting_error(const assign *a, const char *msg, const assign_list *l, char *err, size_t n) {
    size_t k = strlen(a->name);
    const char *rest = !strncmp(msg, a->name, k) && msg[k] == ':' ? msg + k + 1 : NULL;
    int opt = a->option ? (int)strcspn(a->option, "=") : 0; // --ia, of --ia=2
    if (a->from == FROM_COMMAND && rest) return fail(err, n, "%.*s:%s", opt, a->option, rest);
    if (a->from == FROM_COMMAND) return fail(err, n, "%.*s: %s", opt, a->option, msg);
    return fail(err, n, "%s: %s", l->given, msg);
}

// The dynamics named last (NULL if none).
static const assign *last_dynamics(const assign_list *l) {
    const assign *dyn = NULL;
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].name, "dynamics")) dyn = &l->v[i];
    return dyn;
}

// Every assignment but the dynamics (set when c was made), in order.
static int apply_list(blo_config *c, const assign_list *l, int lenient, char *err, size_t n) {
    blo_error be;
    const blo_method_type *m = blo_config_method(c);
    const assign *dyn = last_dynamics(l);
    if (dyn && !blo_config_has(c, "dynamics") && !lenient)
        return fail(err, n, "%s: method %s unrolls no LL dynamics", dyn->option ? dyn->option : l->given, m->name);
    for (int i = 0; i < l->n; i++) {
        const assign *a = &l->v[i];
        if (!strcmp(a->name, "dynamics")) continue;
        if (!blo_config_has(c, a->name)) {
            if (a->from == FROM_COMMAND && lenient) continue;
            const blo_dynamics_type *d = blo_config_dynamics(c);
            if (a->from == FROM_GIVEN)
                return fail(err, n, "%s: '+%s' is not a flag of method %s", l->given, a->name, m->name);
            return fail(err, n, "%.*s: not a setting of method %s%s%s (hypertape run --help lists each "
                        "method's)", (int)strcspn(a->option, "="), a->option, m->name, d ? " or dynamics " : "",
                        d ? d->name : "");
        }
        if (blo_config_set(c, a->name, a->value, &be)) return setting_error(a, be.msg, l, err, n);
    }
    return 0;
}

// The problem's settings: its defaults (or the earlier run's), AIT_P's prior when the method
// uses one, then --set and --seed.
static int problem_params(const cli_args *a, cli_plan *p, char *err, size_t n) {
    const mdl_entry *e = p->entry;
    blo_error be;
    const blo_setting *prior = blo_setting_find(e->settings, "prior");
    if (prior && prior->type == BLO_SET_BOOL && (blo_config_needs(p->config) & BLO_NEEDS_PRIOR))
        blo_setting_parse(prior, p->problem_params, "1", NULL); // --set can still say otherwise
    for (int i = 0; i < a->n_sets; i++) {
        const char *s = a->sets[i], *eq = strchr(s, '=');
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(eq - s), s);
        const blo_setting *r = blo_setting_find(e->settings, name);
        if (!r) {
            char known[256] = "";
            size_t len = 0;
            for (const blo_setting *k = e->settings; k && k->name && len < sizeof known; k++)
                len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", k->name);
            return fail(err, n, "unknown setting '%s' for problem %s (known: %s)", name, e->name, len ? known : "none");
        }
        if (blo_setting_parse(r, p->problem_params, eq + 1, &be)) return fail(err, n, "--set %s", be.msg);
    }
    if (a->seed) {
        const blo_setting *r = blo_setting_find(e->settings, "seed");
        if (!r) return fail(err, n, "--seed: problem %s draws nothing at random (it has no seed)", e->name);
        if (blo_setting_parse(r, p->problem_params, a->seed, &be)) return fail(err, n, "--seed: %s", be.msg);
    }
    return 0;
}

// "v1,v2,..." into a new array (its length in *count).
static int parse_start(const char *s, double **out, int *count, char *err, size_t n) {
    int k = 1;
    for (const char *q = s; *q; q++) k += *q == ',';
    double *v = malloc(sizeof(double) * (size_t)k);
    if (!v) return fail(err, n, "out of memory");
    const char *q = s;
    for (int i = 0; i < k; i++) {
        char *end;
        errno = 0;
        v[i] = strtod(q, &end);
        if (end == q || errno || !isfinite(v[i]) || (*end != ',' && *end)) {
            free(v);
            return fail(err, n, "--start: entry %d of '%s' is not a number", i + 1, s);
        }
        q = end + (*end == ',');
    }
    *out = v, *count = k;
    return 0;
}

void cli_plan_free(cli_plan *p) {
    free(p->problem_params);
    free(p->start);
    blo_config_free(p->config);
    memset(p, 0, sizeof *p);
}

// The entry's params, a copy of its defaults.
static int new_problem(cli_plan *p, const mdl_entry *e, char *err, size_t n) {
    p->entry = e;
    p->problem_params = calloc(1, e->params_size ? e->params_size : 1);
    if (!p->problem_params) return fail(err, n, "out of memory");
    if (e->params_size) memcpy(p->problem_params, e->defaults, e->params_size);
    return 0;
}

// The method's configuration on the plan's problem: its paper settings, on the dynamics named
// last in l (if any; else theirs or the method's).
static int new_config(cli_plan *p, const char *method, const assign_list *l, char *err, size_t n) {
    const blo_method_type *m = blo_method_find(method);
    if (!m) return fail(err, n, "unknown method '%s' (hypertape list shows them)", method);
    const assign *dyn = last_dynamics(l);
    if (dyn && (m->needs & BLO_NEEDS_DYNAMICS) && !blo_dynamics_find(dyn->value)) {
        blo_config *c = blo_config_new(m, NULL);
        blo_error be;
        blo_config_set(c, "dynamics", dyn->value, &be); // for its message, which lists them
        blo_config_free(c);
        return setting_error(dyn, be.msg, l, err, n);
    }
    const char *d = dyn && (m->needs & BLO_NEEDS_DYNAMICS) ? dyn->value : NULL; // else apply_list says
    return (p->config = mdl_paper_config(p->entry, m, d, err, n)) ? 0 : -1;
}

// The command line's options, after everything else.
static int push_command(assign_list *l, const cli_args *a) {
    for (int i = 0; i < a->n_opts; i++)
        if (push(l, a->opts[i].name, a->opts[i].value, a->opts[i].option, FROM_COMMAND)) return -1;
    return 0;
}

static int plan_from_args(const cli_args *a, const char *given, int lenient, cli_plan *p, char *err,
                          size_t n) {
    char method[64];
    snprintf(method, sizeof method, "%.*s", (int)strcspn(given, ":+"), given);
    assign_list l = {.given = given};
    int rc = new_problem(p, mdl_find(a->problem), err, n) || push_given(&l, given, err, n) ? -1 : 0;
    if (!rc && push_command(&l, a)) rc = fail(err, n, "out of memory");
    if (!rc) rc = new_config(p, method, &l, err, n);
    if (!rc) rc = apply_list(p->config, &l, lenient, err, n);
    list_free(&l);
    return rc;
}

// One group of an earlier run's settings object into params through its table.
static int json_group(const json_value *g, const blo_setting *table, void *params, const char *owner,
                      char *err, size_t n) {
    blo_error be;
    if (g && g->kind != JSON_OBJECT) return fail(err, n, "settings: %s's settings are not an object", owner);
    for (int i = 0; g && i < g->n_items; i++) {
        const json_value *v = &g->items[i];
        if (!strcmp(v->key, "name") || !strcmp(v->key, "start") || !strcmp(v->key, "start_index")) continue;
        const blo_setting *r = blo_setting_find(table, v->key);
        if (!r || (v->kind != JSON_NUMBER && v->kind != JSON_STRING && v->kind != JSON_BOOL))
            return fail(err, n, "settings: '%s' is not a setting of %s", v->key, owner);
        if (blo_setting_parse(r, params, v->text, &be)) return fail(err, n, "settings: %s: %s", owner, be.msg);
    }
    return 0;
}

static const char *json_name(const json_value *g) {
    const json_value *v = json_get(g, "name");
    return v && v->kind == JSON_STRING ? v->text : NULL;
}

static int plan_from_json(const cli_args *a, const json_value *js, cli_plan *p, char *err, size_t n) {
    const json_value *s = json_get(js, "settings") ? json_get(js, "settings") : js;
    const json_value *pg = json_get(s, "problem"), *mg = json_get(s, "method"), *dg = json_get(s, "dynamics");
    const json_value *sg = json_get(s, "solver");
    const char *pname = json_name(pg), *mname = json_name(mg);
    if (!pname || !mname || !sg || sg->kind != JSON_OBJECT || (dg && dg->kind != JSON_OBJECT))
        return fail(err, n, "settings: expected problem, method, solver (and dynamics) objects, with names");
    const mdl_entry *e = mdl_find(pname);
    if (!e) return fail(err, n, "settings: unknown problem '%s'", pname);
    const blo_method_type *mt = blo_method_find(mname);
    if (!mt) return fail(err, n, "settings: unknown method '%s'", mname);
    blo_error be;
    if (new_problem(p, e, err, n)) return -1;
    if (!(p->config = blo_config_new(mt, &be))) return fail(err, n, "%s", be.msg);
    blo_settings_group g[3];
    if (json_group(pg, e->settings, p->problem_params, e->name, err, n)) return -1;
    if (dg && (!json_name(dg) || blo_config_set(p->config, "dynamics", json_name(dg), &be)))
        return fail(err, n, "settings: %s", json_name(dg) ? be.msg : "the dynamics has no name");
    int ng = blo_config_groups(p->config, g);
    const json_value *src[3] = {sg, mg, dg};
    for (int i = 0; i < ng; i++)
        if (json_group(src[i], g[i].table, g[i].params, g[i].name, err, n)) return -1;
    const json_value *si = json_get(pg, "start_index"), *st = json_get(pg, "start");
    if (si && (si->kind != JSON_NUMBER || parse_int(si->text, 0, 1000, &p->start_index)))
        return fail(err, n, "settings: a bad start_index");
    if (st && st->kind == JSON_ARRAY) {
        if (!(p->start = malloc(sizeof(double) * (size_t)(st->n_items + 1)))) return fail(err, n, "out of memory");
        p->n_start = st->n_items;
        for (int i = 0; i < st->n_items; i++)
            if (st->items[i].kind != JSON_NUMBER || (p->start[i] = strtod(st->items[i].text, NULL), !isfinite(p->start[i])))
                return fail(err, n, "settings: start entry %d is not a number", i + 1);
    }
    snprintf(p->label, sizeof p->label, "%s", mname);
    // the command line on top: its dynamics first (which resets the dynamics' settings)
    assign_list l = {.given = mname};
    int rc = push_command(&l, a) ? fail(err, n, "out of memory") : 0;
    const assign *dyn = rc ? NULL : last_dynamics(&l);
    if (!rc && dyn && blo_config_set(p->config, "dynamics", dyn->value, &be)) rc = setting_error(dyn, be.msg, &l, err, n);
    if (!rc) rc = apply_list(p->config, &l, 0, err, n);
    list_free(&l);
    return rc;
}

int cli_plan_make(const cli_args *a, const char *given, const json_value *settings, int lenient,
                  cli_plan *p, char *err, size_t n) {
    memset(p, 0, sizeof *p);
    int rc = settings ? plan_from_json(a, settings, p, err, n) : plan_from_args(a, given, lenient, p, err, n);
    if (!rc && !settings) snprintf(p->label, sizeof p->label, "%s", given);
    if (!rc) rc = problem_params(a, p, err, n);
    if (!rc && a->start) {
        free(p->start);
        p->start = NULL;
        rc = parse_start(a->start, &p->start, &p->n_start, err, n);
    }
    if (!rc && a->has_start_index) p->start_index = a->start_index;
    if (rc) cli_plan_free(p);
    return rc;
}

int cli_plan_has(const cli_plan *p, const char *name) { return blo_config_has(p->config, name); }

int cli_plan_model(const cli_plan *p, mdl_model *m, double **x0, double **y0, char *err, size_t n) {
    *x0 = *y0 = NULL;
    if (mdl_make(p->entry, p->problem_params, m, err, n)) return -1;
    int nx = m->prob.n_x, ny = m->prob.n_y;
    if (p->start && p->n_start != nx + ny)
        return fail(err, n, "--start: %d values given, %d needed (x then y)", p->n_start, nx + ny);
    if (!p->start && p->start_index > 0 && p->start_index >= m->n_starts)
        return fail(err, n, "--start-index %d: %s has %d start points", p->start_index, p->entry->name, m->n_starts);
    if (!(*x0 = calloc((size_t)nx + (size_t)ny, sizeof(double)))) return fail(err, n, "out of memory");
    *y0 = *x0 + nx;
    if (p->start) memcpy(*x0, p->start, sizeof(double) * (size_t)(nx + ny));
    else if (m->n_starts > 0) {
        memcpy(*x0, m->x0[p->start_index], sizeof(double) * (size_t)nx);
        memcpy(*y0, m->y0[p->start_index], sizeof(double) * (size_t)ny);
    }
    return 0;
}

// A params struct's values as members of the current JSON object.
static void write_group(json_writer *w, const blo_setting *table, const void *params) {
    char buf[4096];
    for (const blo_setting *r = table; r && r->name; r++) {
        json_key(w, r->name);
        const char *field = (const char *)params + r->offset;
        switch (r->type) {
        case BLO_SET_INT: json_int(w, *(const int *)(const void *)field); break;
        case BLO_SET_DOUBLE: json_number(w, *(const double *)(const void *)field); break;
        case BLO_SET_BOOL: json_bool(w, *(const int *)(const void *)field != 0); break;
        default: json_string(w, blo_setting_format(r, params, buf, sizeof buf)); break;
        }
    }
}

void cli_json_begin(json_writer *w, FILE *f, const cli_plan *p) {
    json_begin(w, f);
    json_key(w, "problem");
    json_string(w, p->entry->name);
    json_key(w, "method");
    json_string(w, p->label);
    json_key(w, "settings");
    cli_plan_write_settings(p, w);
}

void cli_plan_write_settings(const cli_plan *p, json_writer *w) {
    json_object(w);
    json_key(w, "problem");
    json_object(w);
    json_key(w, "name");
    json_string(w, p->entry->name);
    write_group(w, p->entry->settings, p->problem_params);
    if (p->start) {
        json_key(w, "start");
        json_numbers(w, p->start, p->n_start);
    } else {
        json_key(w, "start_index");
        json_int(w, p->start_index);
    }
    json_close(w);
    blo_settings_group g[3];
    int ng = blo_config_groups(p->config, g);
    for (int i = 0; i < ng; i++) {
        json_key(w, g[i].owner);
        json_object(w);
        if (i) { // the method's and the dynamics' names
            json_key(w, "name");
            json_string(w, g[i].name);
        }
        write_group(w, g[i].table, g[i].params);
        json_close(w);
    }
    json_close(w);
}

// ---- an earlier run's settings ----------------------------------------------------------------------

// The whole of a file (malloc'd), or NULL with a message.
static char *read_text(const char *path, char *err, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, n, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    errno = 0;
    for (size_t got = 1; s && got;) {
        if (len + 1 >= cap) {
            char *m = realloc(s, cap *= 2);
            if (!m) free(s);
            s = m;
        }
        if (s) len += got = fread(s + len, 1, cap - len - 1, f);
    }
    int bad = ferror(f), why = errno ? errno : EIO;
    fclose(f);
    if (!s) {
        snprintf(err, n, "%s: out of memory", path);
        return NULL;
    }
    if (bad) {
        free(s);
        snprintf(err, n, "%s: cannot read: %s", path, strerror(why)); // a directory: EISDIR
        return NULL;
    }
    s[len] = 0;
    return s;
}

// The settings an earlier run was made with: from --resume's state file or --settings's JSON.
json_value *cli_earlier_settings(const cli_args *a, char *err, size_t n) {
    char *text = NULL;
    if (a->resume) {
        blo_error be;
        if (blo_solver_read_meta(a->resume, &text, &be)) {
            snprintf(err, n, "--resume %s", be.msg);
            return NULL;
        }
    } else if (!(text = read_text(a->settings, err, n))) {
        return NULL;
    }
    char perr[200];
    json_value *js = json_parse(text, perr, sizeof perr);
    if (!js) snprintf(err, n, "%s: not JSON settings: %s", a->resume ? a->resume : a->settings, perr);
    free(text);
    return js;
}

void cli_print_command_options(FILE *f, const char *cmd) {
    unsigned bit = cmd_bit(cmd);
    for (int i = 0; i < N_FIXED; i++) {
        if (!(fixed[i].cmds & bit)) continue;
        char head[64];
        snprintf(head, sizeof head, "%s%s%s", fixed[i].name, fixed[i].arg ? " " : "", fixed[i].arg ? fixed[i].arg : "");
        fprintf(f, "  %-24s %s\n", head, fixed[i].help);
    }
}
