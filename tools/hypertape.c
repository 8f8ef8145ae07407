// The `hypertape` command: list, run, compare, gradcheck, bench. An unknown subcommand, option or
// bad value exits with status 2 and one line saying what is wrong; a run stopped by an error
// exits with 1 after reporting its last good iterate.
#include "bench.h"
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char *usage_text =
    "usage: hypertape COMMAND [options]\n"
    "  list [PROBLEM]        problems, methods and dynamics; with PROBLEM, its settings per method\n"
    "  run PROBLEM --method M [options]       solve the problem with one method\n"
    "  compare PROBLEM --methods a,b,c [options] [--plot FILE.png]   convergence of several methods\n"
    "  gradcheck PROBLEM --method M [--json]  hypergradient vs central differences at the start\n"
    "  bench [autodiff|bilevel|reference|all] [--quick] [--torch FILE]   timing benchmarks\n"
    "Each command takes --help.\n";

static const char *bench_usage =
    "usage: hypertape bench [autodiff|bilevel|reference|all] [--quick] [--torch FILE]\n"
    "  autodiff, bilevel     the engine's and the hypergradients' benchmarks (all: both)\n"
    "  reference             only the cases the issue gives PyTorch times for (bilevel (a), (d))\n"
    "  --quick               fewer repeats\n"
    "  --torch FILE          compare with PyTorch's times measured on this machine, as written by\n"
    "                        tools/bench_torch.py --out FILE (default: the issue's reference machine)\n";

static void run_help(const char *cmd) {
    printf("usage: hypertape %s PROBLEM %s [options]\n", cmd,
           !strcmp(cmd, "compare") ? "--methods a,b,c" : "--method M");
    printf("  --dynamics D           LL dynamics: gd, bda, nesterov, accel, momentum\n"
           "  --set NAME=VALUE       a problem setting (hypertape list PROBLEM shows them)\n"
           "  --start=X0,Y0...       start point: x then y, comma-separated\n"
           "  --start-index i        which of the problem's start points (default 0)\n"
           "  --seed S               seed of the problem's random draws\n"
           "  --trace FILE.csv       (run) one line per UL iteration\n"
           "  --plot FILE.png        (compare) the convergence figure, drawn with gnuplot\n"
           "  --json                 (run, gradcheck) one JSON object on stdout\n");
    cli_print_options(stdout);
    printf("Settings apply in order: the method's defaults, the problem's paper settings for it, "
           "then these options.\n");
}

static int cmd_list(int argc, char **argv) {
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
        printf("%s: %s\n  source: %s\n  settings: %s\n  defaults per method:\n", e->name, e->summary,
               e->source, e->params && *e->params ? e->params : "none");
        cli_args a = {.problem = e->name};
        for (const char *const *m = blo_method_names(); *m; m++) {
            cli_settings st;
            char err[256];
            if (cli_settings_for(&a, e, *m, &st, err, sizeof err)) continue;
            printf("    %-8s ", *m);
            cli_describe(stdout, &st);
        }
        return 0;
    }
    printf("problems:\n");
    for (const mdl_entry *const *e = mdl_registry(); *e; e++)
        printf("  %-15s %s (%s)\n", (*e)->name, (*e)->summary, (*e)->source);
    printf("methods:\n");
    const char *const *n = blo_method_names(), *const *s = blo_method_summaries();
    for (int i = 0; n[i]; i++) printf("  %-15s %s\n", n[i], s[i]);
    printf("dynamics:\n");
    n = blo_dynamics_names(), s = blo_dynamics_summaries();
    for (int i = 0; n[i]; i++) printf("  %-15s %s\n", n[i], s[i]);
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    bench_opts o = bench_default_opts();
    const char *what = "all", *torch = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) o.quick = 1;
        else if (!strcmp(argv[i], "--help")) {
            printf("%s", bench_usage);
            return 0;
        } else if (!strcmp(argv[i], "--torch") || !strncmp(argv[i], "--torch=", 8)) {
            torch = argv[i][7] == '=' ? argv[i] + 8 : i + 1 < argc ? argv[++i] : NULL;
            if (!torch || !*torch) {
                fprintf(stderr, "hypertape bench: --torch needs a file (from tools/bench_torch.py --out)\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "autodiff") || !strcmp(argv[i], "bilevel") ||
                   !strcmp(argv[i], "reference") || !strcmp(argv[i], "all")) {
            what = argv[i];
        } else {
            fprintf(stderr, "hypertape bench: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    char err[512];
    if (torch && bench_torch_read(torch, &o, err, sizeof err)) {
        fprintf(stderr, "hypertape bench: --torch %s\n", err);
        return 2;
    }
    o.reference_only = !strcmp(what, "reference");
    if (!strcmp(what, "all") || !strcmp(what, "autodiff")) bench_autodiff(&o);
    if (strcmp(what, "autodiff")) bench_bilevel(&o);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "list")) return cmd_list(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "run") || !strcmp(cmd, "compare") || !strcmp(cmd, "gradcheck")) {
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--help")) {
                run_help(cmd);
                return 0;
            }
        cli_args a;
        char err[512];
        if (cli_parse(cmd, argc - 2, argv + 2, &a, err, sizeof err)) {
            fprintf(stderr, "hypertape %s: %s\n", cmd, err);
            return 2;
        }
        return !strcmp(cmd, "run") ? cli_run(&a) : !strcmp(cmd, "compare") ? cli_compare(&a) : cli_gradcheck(&a);
    }
    fprintf(stderr, "hypertape: unknown command '%s' (try hypertape --help)\n", cmd);
    return 2;
}
