// The `hypertape` command. Subcommands: bench. An unknown subcommand or option exits with
// status 2 and one line saying what is wrong.
#include "bench.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: hypertape bench [autodiff|bilevel|all] [--quick]\n"
               "  bench    time the autodiff engine (ns per op, Hessian-vector / gradient, BLAS share)\n");
}

static int cmd_bench(int argc, char **argv) {
    bench_opts o = {0};
    const char *what = "all";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) o.quick = 1;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: hypertape bench [autodiff|bilevel|all] [--quick]\n");
            return 0;
        } else if (!strcmp(argv[i], "autodiff") || !strcmp(argv[i], "bilevel") || !strcmp(argv[i], "all")) {
            what = argv[i];
        }
        else {
            fprintf(stderr, "hypertape bench: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (strcmp(what, "bilevel")) bench_autodiff(&o);
    if (strcmp(what, "autodiff")) bench_bilevel(&o);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc - 2, argv + 2);
    fprintf(stderr, "hypertape: unknown command '%s' (try hypertape --help)\n", argv[1]);
    return 2;
}
