// The `hypertape` command: list, run, compare, gradcheck, bench. An unknown subcommand, option or
// bad value exits with status 2 and one line saying what is wrong; a run stopped by an error
// exits with 1 after reporting its last good iterate.
#include "bench.h"
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *usage_text =
    "usage: hypertape COMMAND [options]\n"
    "  list [PROBLEM]        problems, methods and dynamics; with PROBLEM, its settings per method\n"
    "  run PROBLEM --method M [options]       solve the problem with one method\n"
    "  run --resume FILE [--ul-iters T]       continue a run saved with --checkpoint FILE\n"
    "  compare PROBLEM --methods a,b,c [options] [--plot FILE.png]   convergence of several methods\n"
    "  gradcheck PROBLEM --method M [--rtol r] [--atol a] [--json]\n"
    "                                         hypergradient vs central differences: PASS or FAIL\n"
    "  bench [autodiff|bilevel|reference|memory|fhg|all] [--quick] [--torch FILE]   timing benchmarks\n"
    "Each command takes --help.\n";

static const char *bench_usage =
    "usage: hypertape bench [autodiff|bilevel|reference|memory|fhg|all] [--quick] [--torch FILE]\n"
    "  autodiff, bilevel     the engine's and the hypergradients' benchmarks (all: both)\n"
    "  reference             only the cases the issue gives PyTorch times for (bilevel (a), (d),\n"
    "                        autodiff (f))\n"
    "  memory                RHG in bounded memory (checkpointing) against stored iterates\n"
    "  fhg                   only bilevel (e): forward (fhg) against reverse mode (rhg) as n_x grows\n"
    "  --quick               fewer repeats\n"
    "  --torch FILE          compare with PyTorch's times measured on this machine, as written by\n"
    "                        tools/bench_torch.py --out FILE (default: the issue's reference machine)\n";

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
                   !strcmp(argv[i], "reference") || !strcmp(argv[i], "memory") || !strcmp(argv[i], "fhg") ||
                   !strcmp(argv[i], "all")) {
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
    if (!strcmp(what, "memory")) bench_checkpoint(&o);
    else if (!strcmp(what, "fhg")) bench_fhg(&o);
    else if (strcmp(what, "autodiff")) bench_bilevel(&o);
    if (o.reference_only) bench_convnet(&o);
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
    if (!strcmp(cmd, "list")) {
        int rc = cli_list(argc - 2, argv + 2);
        if (!rc && (fflush(stdout) || ferror(stdout))) {
            fprintf(stderr, "hypertape list: cannot write the list: %s\n", strerror(errno ? errno : EIO));
            return 1;
        }
        return rc;
    }
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "run") || !strcmp(cmd, "compare") || !strcmp(cmd, "gradcheck")) {
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--help")) {
                cli_print_help(stdout, cmd);
                return fflush(stdout) ? 1 : 0;
            }
        cli_args a;
        char err[512];
        if (cli_parse(cmd, argc - 2, argv + 2, &a, err, sizeof err)) {
            fprintf(stderr, "hypertape %s: %s\n", cmd, err);
            cli_args_free(&a);
            return 2;
        }
        int rc = !strcmp(cmd, "run") ? cli_run(&a) : !strcmp(cmd, "compare") ? cli_compare(&a) : cli_gradcheck(&a);
        cli_args_free(&a);
        return rc;
    }
    fprintf(stderr, "hypertape: unknown command '%s' (try hypertape --help)\n", cmd);
    return 2;
}
