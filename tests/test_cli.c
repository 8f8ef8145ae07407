// The `hypertape` command as a user meets it: bad usage exits with status 2 and one line on
// stderr naming what was wrong; runs report JSON; gradcheck agrees with finite differences; a run
// stopped by an error exits with 1 and reports its last good iterate.
#include "../bilevel/comm.h"
#include "cli_util.h"
#include "harness.h"
#include "tests.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>


void test_cli(void) {
    struct { const char *args, *says; } bad[] = {
        {"", "usage"},
        {"frobnicate", "unknown command 'frobnicate'"},
        {"run nonconvex", "--method is required"},
        {"run nosuch --method rhg", "unknown problem 'nosuch'"},
        {"run nonconvex --method sgd", "unknown method 'sgd'"},
        {"run nonconvex --method rhg --bogus", "unknown option '--bogus'"},
        {"run nonconvex --method rhg --ll-iters 0", "--ll-iters: bad value '0'"},
        {"run nonconvex --method rhg --lr-x -1", "--lr-x: bad value '-1'"},
        {"run nonconvex --method rhg --optimizer sgd", "--optimizer: bad value 'sgd'"},
        {"run nonconvex --method rhg --dynamics nope", "--dynamics: bad value 'nope'"},
        {"run nonconvex --method rhg --set b=1", "unknown setting 'b'"},
        {"run nonconvex --method rhg --set n=abc", "n: bad value 'abc'"},
        {"run nonconvex --method rhg --start=1,2,3", "--start"},
        {"run nonconvex --method rhg --ll-iters", "--ll-iters needs a value"},
        {"compare nonconvex --methods rhg,foo", "unknown method 'foo'"},
        {"compare nonconvex --methods rhg+xyz", "unknown variant '+xyz'"},
        {"gradcheck nonconvex --method bome", "not the gradient of an objective"},
        {"gradcheck quadratic --method rhg --rtol -1", "--rtol: bad value '-1'"},
        {"run nonconvex --method bome --ll-iters 5", "--ll-iters: not a setting of method bome"},
        {"run nonconvex --method rhg --ul-iters 2000000000000", "--ul-iters: bad value '2000000000000'"},
        {"run nonconvex --method rhg --ll-iters 2000000000", "--ll-iters: bad value '2000000000'"},
        {"run quadratic --set n=1000 --method rhg --ll-iters 100000000", "this machine has"},
        {"run sinusoid --method maml --set batch=100000", "tasks of a batch need"},
        {"run nonconvex --method rhg --ia=2", "--ia: bad value '2'"},
        {"run nonconvex --method rhg --no-ia=1", "--no-ia takes no value"},
        {"run nonconvex --method bome --dynamics gd", "unrolls no LL dynamics"},
        {"compare nonconvex --methods rhg,,cg", "an empty method name"},
        {"compare nonconvex --methods rhg,cg --galet-N 3", "unknown option '--galet-N'"},
        {"compare nonconvex --methods rhg,cg --N 3", "--N: not a setting of any method compared"},
        {"compare nonconvex --methods rhg --plot ''", "--plot needs a non-empty value"},
        {"run nonconvex --method rhg --trace ''", "--trace needs a non-empty value"},
        {"run nonconvex --method rhg --checkpoint-every 5", "--checkpoint-every needs --checkpoint"},
        {"run nonconvex --method rhg --checkpoint /nonexistent/state", "--checkpoint: cannot write /nonexistent/state.tmp"},
        {"run nonconvex --method rhg --checkpoint .", "--checkpoint: . is a directory"},
        {"compare nonconvex --methods rhg,cg --plot .", "--plot: . is a directory"},
        {"run --resume /nonexistent/state", "/nonexistent/state: cannot open"},
        {"run --resume .", "--resume . is a directory"},
        {"run --settings .", ".: cannot read: Is a directory"},
        {"bench reference --torch .", "--torch .: cannot read: Is a directory"},
        {"run nonconvex --resume /nonexistent/state", "holds the problem and the method; give neither"},
        {"run --settings /nonexistent/s.json", "/nonexistent/s.json: cannot open"},
        {"gradcheck nonconvex --method ait --trace t.csv", "--trace is not an option of gradcheck"},
        {"run hyperclean --method rhg --set data=/nonexistent", "/nonexistent"},
        {"bench --frob", "unknown argument '--frob'"},
        {"bench reference --torch", "--torch needs a file"},
        {"bench reference --torch /nonexistent", "/nonexistent: cannot open"},
        {"list nosuch", "unknown problem 'nosuch'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[160];
        snprintf(name, sizeof name, "cli: 'hypertape %s' exits 2 with one line", bad[i].args);
        TEST_CASE(name) {
            cli_result r = cli_exec(bad[i].args);
            EXPECT(r.status == 2, "status %d", r.status);
            EXPECT(strstr(r.err, bad[i].says) != NULL, "stderr lacks '%s': %s", bad[i].says, r.err);
            EXPECT(cli_lines(r.err) == 1 || i == 0, "%d lines on stderr: %s", cli_lines(r.err), r.err);
        }
    }
    // Under mpirun (its variables, faked) on 2 ranks: compare and gradcheck run in one process, and
    // run needs an MPI build; each refuses on rank 0 with one line, silently on the others.
    static const struct {
        const char *args, *says;
        int mpi_ok; // an MPI build runs it across the ranks
    } ranked[] = {
        {"compare nonconvex --methods rhg,cg --ul-iters 2", "runs in one process", 0},
        {"gradcheck nonconvex --method rhg", "runs in one process", 0},
        {"run nonconvex --method rhg --ul-iters 2", "built without MPI", 1},
    };
    for (size_t i = 0; i < sizeof ranked / sizeof ranked[0]; i++)
        for (int rank = 0; rank < 2; rank++) {
            if (ranked[i].mpi_ok && blo_comm_mpi_built()) continue;
            char name[200], r_str[2] = {(char)('0' + rank), 0};
            snprintf(name, sizeof name, "cli: 'hypertape %s' under mpirun -n 2, rank %d, exits 2", ranked[i].args, rank);
            TEST_CASE(name) {
                setenv("OMPI_COMM_WORLD_SIZE", "2", 1), setenv("OMPI_COMM_WORLD_RANK", r_str, 1);
                cli_result r = cli_exec(ranked[i].args);
                unsetenv("OMPI_COMM_WORLD_SIZE"), unsetenv("OMPI_COMM_WORLD_RANK");
                EXPECT(r.status == 2 && !r.out[0], "status %d, stdout '%.80s'", r.status, r.out);
                if (rank == 0)
                    EXPECT(strstr(r.err, ranked[i].says) && strstr(r.err, "2 ranks") && cli_lines(r.err) == 1,
                           "stderr: %s", r.err);
                else EXPECT(!r.err[0], "rank 1 printed: %s", r.err);
            }
        }
    TEST_CASE("cli: compare --plot without gnuplot on the PATH exits 2 with one line, before any method runs") {
        char dir[] = "/tmp/hypertape-plot-XXXXXX", args[160], dat[64];
        EXPECT(mkdtemp(dir) != NULL, "cannot make a temporary folder");
        snprintf(args, sizeof args, "compare nonconvex --methods rhg,cg --plot %s/f.png", dir);
        snprintf(dat, sizeof dat, "%s/f.png.dat", dir);
        const char *path = getenv("PATH");
        char *keep = path ? strdup(path) : NULL;
        setenv("PATH", "/nonexistent", 1);
        cli_result r = cli_exec(args);
        if (keep) setenv("PATH", keep, 1);
        free(keep);
        EXPECT(r.status == 2 && strstr(r.err, "gnuplot is not installed") && cli_lines(r.err) == 1 && !r.out[0],
               "status %d: %s", r.status, r.err);
        EXPECT(access(dat, F_OK) != 0, "the figure's data was written before the check");
        remove(dat), rmdir(dir);
    }
    TEST_CASE("cli: bench --torch refuses a times file with a bad line or a missing case") {
        // what tools/bench_torch.py --out writes: one "case value" line per reference case
        const char *bodies[3] = {"quad10_ms 18\nquad1000_ms 60\nhc_rhg_s 3\n",
                                 "quad10_ms 18\nquad1000_ms -1\n", "quad10_ms 18\nhc_gd_s 3\n"};
        const char *says[3] = {"no time for case 'hc_cg_s'", ":2: expected a name and a positive time",
                               ":2: unknown case 'hc_gd_s'"};
        for (int k = 0; k < 3; k++) {
            char path[] = "/tmp/hypertape-torch-XXXXXX", args[96];
            int fd = mkstemp(path);
            FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
            EXPECT(f != NULL, "cannot make a temporary file");
            if (!f) break;
            fputs(bodies[k], f);
            fclose(f);
            snprintf(args, sizeof args, "bench reference --torch %s", path);
            cli_result r = cli_exec(args);
            remove(path);
            EXPECT(r.status == 2 && strstr(r.err, says[k]) && cli_lines(r.err) == 1,
                   "case %d: status %d: %s", k, r.status, r.err);
        }
    }
    TEST_CASE("cli: list and --help work") {
        cli_result r = cli_exec("list");
        EXPECT(r.status == 0 && strstr(r.out, "hyperclean") && strstr(r.out, "galet") && strstr(r.out, "accel"),
               "list: %d", r.status);
        r = cli_exec("list nonconvex");
        EXPECT(r.status == 0 && strstr(r.out, "method ait: ") && strstr(r.out, "ptt=1"), "list nonconvex: %s", r.out);
        const char *cmds[] = {"run --help", "compare --help", "gradcheck --help", "bench --help", "list --help", "--help"};
        for (int k = 0; k < 6; k++) {
            r = cli_exec(cmds[k]);
            EXPECT(r.status == 0 && strstr(r.out, "usage"), "%s: %d", cmds[k], r.status);
        }
    }
    TEST_CASE("cli: run --json reports the result; AIT_NC reaches x* on the nonconvex toy") {
        cli_result r = cli_exec("run nonconvex --method ait --json");
        EXPECT(r.status == 0, "status %d: %s", r.status, r.err);
        const char *keys[] = {"\"problem\"", "\"method\"", "\"x\"", "\"F\"", "\"f\"", "\"x_err\"",
                              "\"ul_iters\": 2000", "\"seconds\"", "\"sec_per_ul_iter\"", "\"kbar_mean\"", "\"error\": null"};
        for (int k = 0; k < 11; k++) EXPECT(strstr(r.out, keys[k]) != NULL, "no %s in %s", keys[k], r.out);
        const char *xe = strstr(r.out, "\"x_err\": ");
        double e = xe ? atof(xe + 10) : 1;
        EXPECT(e < 1e-3, "x_err %g", e);
    }
    TEST_CASE("cli: the same command gives the same numbers") {
        cli_result a = cli_exec("run quadratic --method rhg --ul-iters 20 --seed 3 --json");
        cli_result b = cli_exec("run quadratic --method rhg --ul-iters 20 --seed 3 --json");
        // everything but the timings
        char *ta = strstr(a.out, "\"seconds\""), *tb = strstr(b.out, "\"seconds\"");
        EXPECT(ta && tb && ta - a.out == tb - b.out && !strncmp(a.out, b.out, (size_t)(ta - a.out)),
               "runs differ:\n%s\n%s", a.out, b.out);
    }
    TEST_CASE("cli: gradcheck agrees with central differences") {
        const char *cases[] = {"gradcheck nonconvex --method ait --json", "gradcheck llc --method trhg --json",
                               "gradcheck counterexample --method bda --json", "gradcheck lls --method rhg:nesterov+ia --json"};
        for (int k = 0; k < 4; k++) {
            cli_result r = cli_exec(cases[k]);
            const char *w = strstr(r.out, "\"worst_rel_err\": ");
            double e = w ? atof(w + 17) : 1;
            EXPECT(r.status == 0 && e < 1e-6, "%s: status %d, worst %g: %s", cases[k], r.status, e, r.err);
        }
    }
    TEST_CASE("cli: a run stopped by an error exits 1 and keeps its last good iterate") {
        // an LL step far too large for the quadratic (eigenvalues up to 10) from x = 1: the LL
        // overflows during the first iteration, so x stays at the start
        cli_result r = cli_exec("run quadratic --method rhg --s-l 30 --ul-iters 5 --json "
                       "--start=1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0");
        EXPECT(r.status == 1, "status %d", r.status);
        EXPECT(strstr(r.out, "\"ul_iters\": 0") && strstr(r.out, "\"x\": [1, 1, 1") &&
                   strstr(r.out, "\"error\": \"iteration 0:"),
               "%s", r.out);
        EXPECT(strstr(r.err, "stopped") && cli_lines(r.err) == 1, "%s", r.err);
    }
}
