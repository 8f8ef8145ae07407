// Command-line parsing for `hypertape run | compare | gradcheck`: the option table (each method
// and loop setting once, with its help line), the order defaults are applied in (method, then
// the problem's paper settings, then the command line), and building the model and start point.
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { O_INT, O_DBL, O_FLAG_ON, O_FLAG_OFF, O_CHOICE } opt_kind;

typedef struct {
    const char *name, *arg, *help;
    opt_kind kind;
    size_t off[4];      // fields of cli_settings it sets (0-terminated after the first)
    const char *const *choices; // O_CHOICE: the accepted words, mapped to 0, 1, ...
    double lo;          // smallest accepted value (numbers)
} opt_def;

#define F(field) offsetof(cli_settings, field)
static const char *const opt_names[] = {"plain", "momentum", "adam", NULL};
static const char *const bda_w[] = {"icml", "ait", "fixed", NULL};
static const char *const phi_kinds[] = {"grad", "value", NULL};

static const opt_def opts[] = {
    {"--ll-iters", "K", "LL steps K", O_INT, {F(c.K)}, NULL, 1},
    {"--ul-iters", "T", "UL iterations T", O_INT, {F(s.T)}, NULL, 1},
    {"--truncate", "K'", "T-RHG: back-propagate only the last K' LL steps (0 = all)", O_INT, {F(c.truncate)}, NULL, 0},
    {"--ia", NULL, "initialization auxiliary: y_0 = z, optimized with x", O_FLAG_ON, {F(c.ia)}, NULL, 0},
    {"--no-ia", NULL, "no initialization auxiliary", O_FLAG_OFF, {F(c.ia)}, NULL, 0},
    {"--ptt", NULL, "pessimistic trajectory truncation: differentiate at Kbar = argmax_k F(x, y_k)", O_FLAG_ON, {F(c.ptt)}, NULL, 0},
    {"--no-ptt", NULL, "no trajectory truncation", O_FLAG_OFF, {F(c.ptt)}, NULL, 0},
    {"--prior", "lambda", "IA prior lambda/2 ||z - z_p||^2 (implies --ia)", O_DBL, {F(c.prior_lambda)}, NULL, 0},
    {"--prior-every", NULL, "apply the prior at every UL iteration, not only the first", O_FLAG_OFF, {F(c.prior_first_only)}, NULL, 0},
    {"--graph-mb", "M", "keep the unrolled graph when it fits M MiB (faster), else the forward pass's products over the data; 0 = re-record each step", O_DBL, {F(c.graph_mb)}, NULL, 0},
    {"--warm-start", NULL, "start each UL iteration's LL from the last y", O_FLAG_ON, {F(c.warm_start)}, NULL, 0},
    {"--s-l", "s", "LL step size (gd, bda, nesterov, momentum)", O_DBL, {F(c.gd.s_l), F(c.bda.s_l), F(c.nesterov.s_l), F(c.momentum.s_l)}, NULL, 1e-300},
    {"--s-u", "s", "UL step inside BDA steps", O_DBL, {F(c.bda.s_u)}, NULL, 0},
    {"--alpha", "c", "BDA weight: alpha_k = c/k (icml), c (fixed)", O_DBL, {F(c.bda.c)}, NULL, 0},
    {"--bda-weights", "w", "BDA weights: icml (BDA Eq. 10), ait (AIT Eq. 7), fixed", O_CHOICE, {F(c.bda.weights)}, bda_w, 0},
    {"--mu", "mu", "AIT Eq. 7 weight mu in (0, 1)", O_DBL, {F(c.bda.mu)}, NULL, 0},
    {"--L-f", "L", "accel: Lipschitz constant of grad_y f", O_DBL, {F(c.accel.L_f)}, NULL, 1e-300},
    {"--ll-momentum", "b", "momentum dynamics: heavy-ball weight in [0, 1)", O_DBL, {F(c.momentum.beta)}, NULL, 0},
    {"--J", "J", "cg / neumann iterations", O_INT, {F(c.implicit.iters)}, NULL, 0},
    {"--tol", "t", "cg relative residual tolerance", O_DBL, {F(c.implicit.tol)}, NULL, 0},
    {"--eta", "e", "neumann step", O_DBL, {F(c.implicit.eta)}, NULL, 1e-300},
    {"--bome-T", "T", "bome: inner GD steps", O_INT, {F(c.bome.T)}, NULL, 1},
    {"--bome-alpha", "a", "bome: inner step", O_DBL, {F(c.bome.alpha)}, NULL, 1e-300},
    {"--bome-eta", "e", "bome: barrier weight eta", O_DBL, {F(c.bome.eta)}, NULL, 0},
    {"--bome-phi", "k", "bome: phi = eta ||grad q||^2 (grad) or eta q (value)", O_CHOICE, {F(c.bome.phi_value)}, phi_kinds, 0},
    {"--galet-N", "N", "galet: LL steps per iteration", O_INT, {F(c.galet.N)}, NULL, 0},
    {"--galet-beta", "b", "galet: LL step", O_DBL, {F(c.galet.beta)}, NULL, 1e-300},
    {"--galet-T", "T", "galet: shadow steps on w", O_INT, {F(c.galet.T)}, NULL, 0},
    {"--galet-rho", "r", "galet: shadow step (gamma)", O_DBL, {F(c.galet.rho)}, NULL, 1e-300},
    {"--galet-cold", NULL, "galet: restart w from 0 each iteration", O_FLAG_OFF, {F(c.galet.w_warm)}, NULL, 0},
    {"--bvfim-Tz", "T", "bvfim: z-loop steps", O_INT, {F(c.bvfim.Tz)}, NULL, 1},
    {"--bvfim-Ty", "T", "bvfim: y-loop steps", O_INT, {F(c.bvfim.Ty)}, NULL, 1},
    {"--bvfim-s1", "s", "bvfim: z-loop step", O_DBL, {F(c.bvfim.s1)}, NULL, 1e-300},
    {"--bvfim-s2", "s", "bvfim: y-loop step", O_DBL, {F(c.bvfim.s2)}, NULL, 1e-300},
    {"--bvfim-mu", "m", "bvfim: mu_0 of the schedule mu0 / (l+1)^p", O_DBL, {F(c.bvfim.mu0)}, NULL, 1e-300},
    {"--bvfim-theta", "t", "bvfim: theta_0", O_DBL, {F(c.bvfim.theta0)}, NULL, 0},
    {"--bvfim-tau", "t", "bvfim: tau_0", O_DBL, {F(c.bvfim.tau0)}, NULL, 1e-300},
    {"--bvfim-power", "p", "bvfim: schedule power p", O_DBL, {F(c.bvfim.power)}, NULL, 1e-300},
    {"--optimizer", "o", "UL steps: plain, momentum or adam", O_CHOICE, {F(s.opt)}, opt_names, 0},
    {"--lr-x", "a", "UL step size for x", O_DBL, {F(s.lr_x)}, NULL, 1e-300},
    {"--lr-z", "a", "step size for z (IA) or y (bome)", O_DBL, {F(s.lr_z)}, NULL, 1e-300},
    {"--momentum", "b", "UL heavy-ball weight", O_DBL, {F(s.momentum)}, NULL, 0},
};
#undef F
enum { N_OPTS = sizeof opts / sizeof opts[0] };

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static const opt_def *find_opt(const char *name) {
    for (int i = 0; i < N_OPTS; i++)
        if (!strcmp(opts[i].name, name)) return &opts[i];
    return NULL;
}

void cli_print_options(FILE *f) {
    for (int i = 0; i < N_OPTS; i++) {
        char head[48];
        snprintf(head, sizeof head, "%s%s%s", opts[i].name, opts[i].arg ? " " : "", opts[i].arg ? opts[i].arg : "");
        fprintf(f, "  %-22s %s\n", head, opts[i].help);
    }
}

static int parse_double(const char *s, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return *s && !*end && !errno && isfinite(*v) ? 0 : -1;
}

static int apply(const opt_def *o, const char *val, cli_settings *st, char *err, size_t n) {
    char *base = (char *)st;
    double d = 0;
    int choice = 0;
    if (o->kind == O_INT || o->kind == O_DBL) {
        if (parse_double(val, &d) || (o->kind == O_INT && d != floor(d)) || d < o->lo || fabs(d) > 1e15)
            return fail(err, n, "%s: bad value '%s' (%s %s %g)", o->name, val,
                        o->kind == O_INT ? "an integer" : "a number",
                        o->lo > 0 && o->lo < 1e-100 ? ">" : ">=", o->lo < 1e-100 ? 0.0 : o->lo);
    } else if (o->kind == O_CHOICE) {
        for (choice = 0; o->choices[choice] && strcmp(o->choices[choice], val); choice++) {}
        if (!o->choices[choice]) {
            char list[128] = "";
            for (int k = 0; o->choices[k]; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", o->choices[k]);
            return fail(err, n, "%s: bad value '%s' (one of %s)", o->name, val, list);
        }
    }
    for (int k = 0; k < 4 && (k == 0 || o->off[k]); k++) {
        void *p = base + o->off[k];
        switch (o->kind) {
        case O_INT: *(int *)p = (int)d; break;
        case O_DBL: *(double *)p = d; break;
        case O_FLAG_ON: *(int *)p = 1; break;
        case O_FLAG_OFF: *(int *)p = 0; break;
        case O_CHOICE: *(int *)p = choice; break; // enums are ints here
        }
    }
    if (!strcmp(o->name, "--prior")) st->c.ia = 1;
    return 0;
}

int cli_parse(const char *cmd, int argc, char **argv, cli_args *a, char *err, size_t n) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i], *eq = strchr(s, '=');
        char name[64];
        const char *val = NULL;
        if (s[0] == '-' && s[1] == '-' && eq && (size_t)(eq - s) < sizeof name) { // --name=value
            snprintf(name, sizeof name, "%.*s", (int)(eq - s), s);
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", s);
        }
        const opt_def *o = find_opt(name);
        bool takes = o ? (o->kind == O_INT || o->kind == O_DBL || o->kind == O_CHOICE)
                       : (!strcmp(name, "--method") || !strcmp(name, "--methods") || !strcmp(name, "--dynamics") ||
                          !strcmp(name, "--set") || !strcmp(name, "--start") || !strcmp(name, "--start-index") ||
                          !strcmp(name, "--seed") || !strcmp(name, "--trace") || !strcmp(name, "--plot"));
        if (takes && !val) {
            if (i + 1 >= argc) return fail(err, n, "%s needs a value", name);
            val = argv[++i];
        } else if (!takes && val) {
            return fail(err, n, "%s takes no value", name);
        }
        if (name[0] != '-') {
            if (a->problem) return fail(err, n, "unexpected argument '%s' (the problem is %s)", name, a->problem);
            a->problem = s;
        } else if (!strcmp(name, "--method")) a->method = val;
        else if (!strcmp(name, "--methods")) a->methods = val;
        else if (!strcmp(name, "--set")) {
            if (a->n_sets == CLI_MAX_SETS) return fail(err, n, "too many --set");
            if (!strchr(val, '=')) return fail(err, n, "--set %s: expected NAME=VALUE", val);
            a->sets[a->n_sets++] = val;
        } else if (!strcmp(name, "--start")) a->start = val;
        else if (!strcmp(name, "--start-index")) {
            double d;
            if (parse_double(val, &d) || d < 0 || d > 3 || d != floor(d))
                return fail(err, n, "--start-index: bad value '%s' (0 to 3)", val);
            a->start_index = (int)d;
        } else if (!strcmp(name, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(val, &end, 10);
            if (!*val || *end || errno || val[0] == '-') return fail(err, n, "--seed: bad value '%s'", val);
            a->seed = v, a->has_seed = 1;
        } else if (!strcmp(name, "--trace")) a->trace = val;
        else if (!strcmp(name, "--plot")) a->plot = val;
        else if (!strcmp(name, "--json")) a->json = 1;
        else if (o || !strcmp(name, "--dynamics")) {
            if (a->n_opt == CLI_MAX_OPTS) return fail(err, n, "too many options");
            a->opt_name[a->n_opt] = o ? o->name : "--dynamics";
            a->opt_val[a->n_opt++] = val;
        } else {
            return fail(err, n, "unknown option '%s' (hypertape %s --help lists them)", name, cmd);
        }
    }
    if (!a->problem) return fail(err, n, "no problem given (hypertape list shows them)");
    if (!mdl_find(a->problem)) return fail(err, n, "unknown problem '%s' (hypertape list shows them)", a->problem);
    if (!strcmp(cmd, "compare") ? !a->methods : !a->method)
        return fail(err, n, "%s is required", !strcmp(cmd, "compare") ? "--methods" : "--method");
    return 0;
}

// A method entry is METHOD[:DYNAMICS][+ia][+ptt][+noptt] (compare's variants, e.g. rhg:nesterov+ia).
static int apply_variant(const char *spec, cli_settings *st, char *err, size_t n) {
    const char *p = spec + strcspn(spec, ":+");
    while (*p) {
        char word[32];
        size_t len = strcspn(p + 1, ":+");
        snprintf(word, sizeof word, "%.*s", (int)len, p + 1);
        if (*p == ':') {
            const char *const *names = blo_dynamics_names();
            int k = 0;
            while (names[k] && strcmp(names[k], word)) k++;
            if (!names[k]) return fail(err, n, "%s: unknown dynamics '%s'", spec, word);
            st->c.dynamics = names[k];
        } else if (!strcmp(word, "ia")) st->c.ia = 1;
        else if (!strcmp(word, "ptt")) st->c.ptt = 1;
        else if (!strcmp(word, "noptt")) st->c.ptt = 0;
        else return fail(err, n, "%s: unknown variant '+%s' (ia, ptt, noptt)", spec, word);
        p += 1 + len;
    }
    return 0;
}

int cli_settings_for(const cli_args *a, const mdl_entry *e, const char *spec, cli_settings *st,
                     char *err, size_t n) {
    blo_error be;
    char method[32];
    snprintf(method, sizeof method, "%.*s", (int)strcspn(spec, ":+"), spec);
    if (blo_method_default_config(method, &st->c, &be)) return fail(err, n, "%s", be.msg);
    st->s = blo_solve_default_params();
    if (e->defaults) e->defaults(st->c.method, &st->c, &st->s);
    if (apply_variant(spec, st, err, n)) return -1;
    for (int i = 0; i < a->n_opt; i++) {
        if (!strcmp(a->opt_name[i], "--dynamics")) {
            const char *const *names = blo_dynamics_names();
            int k = 0;
            while (names[k] && strcmp(names[k], a->opt_val[i])) k++;
            if (!names[k]) return fail(err, n, "--dynamics: bad value '%s' (gd, bda, nesterov, accel, momentum)", a->opt_val[i]);
            st->c.dynamics = names[k];
        } else if (apply(find_opt(a->opt_name[i]), a->opt_val[i], st, err, n)) {
            return -1;
        }
    }
    return 0;
}

// Parses "v1,v2,..." into exactly n numbers.
static int parse_list(const char *s, double *out, int n, char *err, size_t en) {
    const char *p = s;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        out[i] = strtod(p, &end);
        if (end == p || errno || !isfinite(out[i]))
            return fail(err, en, "--start: entry %d of '%s' is not a number", i + 1, s);
        p = end;
        if (i + 1 < n) {
            if (*p != ',') return fail(err, en, "--start: %d values given, %d needed (x then y)", i + 1, n);
            p++;
        }
    }
    if (*p) return fail(err, en, "--start: more than %d values (x then y)", n);
    return 0;
}

int cli_make_model(const cli_args *a, mdl_model *m, double **x0, double **y0, int want_prior,
                   char *err, size_t n) {
    const char *sets[CLI_MAX_SETS + 2];
    int ns = 0;
    const mdl_entry *e0 = mdl_find(a->problem);
    if (want_prior && e0->params && strstr(e0->params, "prior=")) sets[ns++] = "prior=1"; // --set can override
    memcpy(sets + ns, a->sets, sizeof(char *) * (size_t)a->n_sets);
    ns += a->n_sets;
    char seed[48];
    const mdl_entry *e = mdl_find(a->problem);
    if (a->has_seed && e->params && strstr(e->params, "seed")) { // --seed seeds the problem's draws
        snprintf(seed, sizeof seed, "seed=%llu", (unsigned long long)a->seed);
        sets[ns++] = seed;
    }
    if (mdl_make(a->problem, ns, sets, m, err, n)) return -1;
    int nx = m->prob.n_x, ny = m->prob.n_y;
    *x0 = calloc((size_t)nx + (size_t)ny, sizeof(double));
    *y0 = *x0 + nx;
    if (!*x0) return fail(err, n, "out of memory");
    if (a->start) {
        double *v = malloc(sizeof(double) * (size_t)(nx + ny));
        int rc = v ? parse_list(a->start, v, nx + ny, err, n) : fail(err, n, "out of memory");
        if (!rc) memcpy(*x0, v, sizeof(double) * (size_t)(nx + ny));
        free(v);
        if (rc) return -1;
    } else if (m->n_starts > 0) {
        if (a->start_index >= m->n_starts)
            return fail(err, n, "--start-index %d: %s has %d start points", a->start_index, a->problem, m->n_starts);
        memcpy(*x0, m->x0[a->start_index], sizeof(double) * (size_t)nx);
        memcpy(*y0, m->y0[a->start_index], sizeof(double) * (size_t)ny);
    }
    return 0;
}

void cli_describe(FILE *f, const cli_settings *st) {
    const blo_method_config *c = &st->c;
    fprintf(f, "K=%d T=%d lr_x=%g", c->K, st->s.T, st->s.lr_x);
    if (c->ia || !strcmp(c->method, "bome")) fprintf(f, " lr_z=%g", st->s.lr_z);
    fprintf(f, " optimizer=%s", opt_names[st->s.opt]);
    const char *m = c->method;
    if (!strcmp(m, "bome")) {
        fprintf(f, " bome_T=%d bome_alpha=%g eta=%g phi=%s", c->bome.T, c->bome.alpha, c->bome.eta,
                phi_kinds[c->bome.phi_value]);
    } else if (!strcmp(m, "galet")) {
        fprintf(f, " N=%d beta=%g T_w=%d rho=%g w=%s", c->galet.N, c->galet.beta, c->galet.T,
                c->galet.rho, c->galet.w_warm ? "warm" : "cold");
    } else if (!strcmp(m, "bvfim")) {
        fprintf(f, " Tz=%d Ty=%d s1=%g s2=%g mu0=%g theta0=%g tau0=%g p=%g", c->bvfim.Tz, c->bvfim.Ty,
                c->bvfim.s1, c->bvfim.s2, c->bvfim.mu0, c->bvfim.theta0, c->bvfim.tau0, c->bvfim.power);
    } else {
        fprintf(f, " dynamics=%s", c->dynamics);
        if (!strcmp(c->dynamics, "bda"))
            fprintf(f, " s_u=%g s_l=%g weights=%s c=%g", c->bda.s_u, c->bda.s_l, bda_w[c->bda.weights], c->bda.c);
        else if (!strcmp(c->dynamics, "accel")) fprintf(f, " L_f=%g", c->accel.L_f);
        else fprintf(f, " s_l=%g", c->gd.s_l);
        if (c->truncate) fprintf(f, " truncate=%d", c->truncate);
        if (c->ia) fprintf(f, " ia");
        if (c->ptt) fprintf(f, " ptt");
        if (c->ia && c->prior_lambda) fprintf(f, " prior=%s", c->prior_lambda < 0 ? "1/lr_z" : "set");
        if (!strcmp(m, "cg") || !strcmp(m, "neumann"))
            fprintf(f, " J=%d%s", c->implicit.iters, !strcmp(m, "neumann") ? "" : "");
        if (!strcmp(m, "neumann")) fprintf(f, " eta=%g", c->implicit.eta);
    }
    fputc('\n', f);
}
