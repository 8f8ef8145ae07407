// `hypertape list [PROBLEM]` and the commands' --help: both generated from the registries and the
// settings tables (problems', methods', dynamics' and the solver's), nothing written twice.
#include "cli.h"

#include <string.h>

// "--ll-iters K" for a row (as_set: "data=DIR", a problem's --set).
static void option_head(const blo_setting *r, int as_set, char *buf, size_t n) {
    const char *arg = r->type == BLO_SET_BOOL ? (as_set ? "1|0" : NULL) : r->arg ? r->arg : "V";
    if (as_set) {
        snprintf(buf, n, "%s=%s", r->name, arg);
        return;
    }
    size_t len = (size_t)snprintf(buf, n, "--");
    for (const char *p = r->name; *p && len + 1 < n; p++) buf[len++] = *p == '_' ? '-' : *p;
    buf[len] = 0;
    if (arg) snprintf(buf + len, n - len, " %s", arg);
}

static void print_table(FILE *f, const blo_setting *table, const void *defaults, int as_set, const char *indent) {
    char head[64], val[300];
    for (const blo_setting *r = table; r && r->name; r++) {
        option_head(r, as_set, head, sizeof head);
        const char *v = blo_setting_format(r, defaults, val, sizeof val);
        if (r->type == BLO_SET_BOOL) v = *v == '1' ? "on" : "off";
        fprintf(f, "%s%-24s %s (default %s)\n", indent, head, r->help, v);
    }
}

void cli_print_help(FILE *f, const char *cmd) {
    int compare = !strcmp(cmd, "compare");
    fprintf(f, "usage: hypertape %s PROBLEM %s [options]\n", cmd, compare ? "--methods a,b,c" : "--method M");
    if (!strcmp(cmd, "run")) fprintf(f, "       hypertape run --resume FILE [--ul-iters T]\n");
    fprintf(f, "options:\n");
    cli_print_command_options(f, cmd);
    blo_solve_params sp = blo_solve_default_params();
    fprintf(f, "the solver's settings:\n");
    print_table(f, blo_solve_settings, &sp, 0, "  ");
    // the methods sharing a table are listed together
    const blo_method_type *const *reg = blo_method_registry();
    for (int i = 0; reg[i]; i++) {
        int first = 1;
        for (int j = 0; j < i; j++) first &= reg[j]->settings != reg[i]->settings;
        if (!first) continue;
        fprintf(f, "method");
        for (int j = i, k = 0; reg[j]; j++)
            if (reg[j]->settings == reg[i]->settings) fprintf(f, "%s %s", k++ ? "," : "", reg[j]->name);
        fprintf(f, "'s settings (defaults of %s):\n", reg[i]->name);
        print_table(f, reg[i]->settings, reg[i]->defaults, 0, "  ");
    }
    for (const blo_dynamics_type *const *d = blo_dynamics_registry(); *d; d++) {
        fprintf(f, "dynamics %s's settings:\n", (*d)->name);
        print_table(f, (*d)->settings, (*d)->defaults, 0, "  ");
    }
    fprintf(f, "A flag (a setting that is 1 or 0) is set by --NAME and cleared by --no-NAME. Settings apply\n"
               "in order: the method's defaults, the problem's paper settings for it (hypertape list\n"
               "PROBLEM), the method's :DYNAMICS and +FLAGs, then these options.\n");
}

// One group of settings as "name=value ..." on a line.
static void print_values(const blo_settings_group *g) {
    char val[300];
    printf("      %s%s%s:", g->owner, strcmp(g->owner, "solver") ? " " : "", strcmp(g->owner, "solver") ? g->name : "");
    for (const blo_setting *r = g->table; r && r->name; r++)
        printf(" %s=%s", r->name, blo_setting_format(r, g->params, val, sizeof val));
    putchar('\n');
}

static int list_problem(const mdl_entry *e) {
    printf("%s: %s\n  source: %s\n  settings (--set NAME=VALUE):\n", e->name, e->summary, e->source);
    if (e->settings && e->settings->name) print_table(stdout, e->settings, e->defaults, 1, "    ");
    else printf("    none\n");
    printf("  each method's settings here (its defaults, then the papers' for this problem):\n");
    cli_args a = {.problem = e->name};
    for (const blo_method_type *const *m = blo_method_registry(); *m; m++) {
        cli_plan p;
        char err[400];
        blo_error be;
        if (cli_plan_make(&a, (*m)->name, NULL, 0, &p, err, sizeof err)) {
            printf("    %-8s (%s)\n", (*m)->name, err);
            continue;
        }
        if (blo_config_resolve(p.config, 1, &be)) printf("    %-8s (%s)\n", (*m)->name, be.msg);
        else {
            printf("    %s\n", (*m)->name);
            blo_settings_group g[3];
            int n = blo_config_groups(p.config, g);
            for (int i = 1; i < n; i++) print_values(&g[i]);
            print_values(&g[0]);
        }
        cli_plan_free(&p);
    }
    return 0;
}

int cli_list(int argc, char **argv) {
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: hypertape list [PROBLEM]\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "hypertape list: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    if (argc == 1) {
        const mdl_entry *e = mdl_find(argv[0]);
        if (!e) {
            fprintf(stderr, "hypertape list: unknown problem '%s'\n", argv[0]);
            return 2;
        }
        return list_problem(e);
    }
    printf("problems:\n");
    for (const mdl_entry *const *e = mdl_registry(); *e; e++) printf("  %-15s %s (%s)\n", (*e)->name, (*e)->summary, (*e)->source);
    printf("methods:\n");
    for (const blo_method_type *const *m = blo_method_registry(); *m; m++) printf("  %-15s %s\n", (*m)->name, (*m)->summary);
    printf("dynamics:\n");
    for (const blo_dynamics_type *const *d = blo_dynamics_registry(); *d; d++) printf("  %-15s %s\n", (*d)->name, (*d)->summary);
    return 0;
}
