// The `hypertape` command as a user meets it: bad usage exits with status 2 and one line on
// stderr naming what was wrong; runs report JSON; gradcheck agrees with finite differences; a run
// stopped by an error exits with 1 and reports its last good iterate.
#include "harness.h"
#include "tests.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef HYPERTAPE_BIN
#error "HYPERTAPE_BIN: the path of the hypertape binary (set by tests/meson.build)"
#endif

typedef struct {
    int status;
    char out[8192], err[2048];
} result;

// Runs `hypertape ARGS` (args must not need quoting) capturing stdout and stderr.
static result run(const char *args) {
    result r = {.status = -1};
    char cmd[1024], errpath[] = "/tmp/hypertape-cli-XXXXXX";
    int fd = mkstemp(errpath);
    if (fd < 0) return r;
    close(fd);
    snprintf(cmd, sizeof cmd, "%s %s 2>%s", HYPERTAPE_BIN, args, errpath);
    FILE *p = popen(cmd, "r");
    if (p) {
        size_t n = fread(r.out, 1, sizeof r.out - 1, p);
        r.out[n] = 0;
        int st = pclose(p);
        r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    FILE *e = fopen(errpath, "r");
    if (e) {
        size_t n = fread(r.err, 1, sizeof r.err - 1, e);
        r.err[n] = 0;
        fclose(e);
    }
    remove(errpath);
    return r;
}

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

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
            result r = run(bad[i].args);
            EXPECT(r.status == 2, "status %d", r.status);
            EXPECT(strstr(r.err, bad[i].says) != NULL, "stderr lacks '%s': %s", bad[i].says, r.err);
            EXPECT(lines(r.err) == 1 || i == 0, "%d lines on stderr: %s", lines(r.err), r.err);
        }
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
            result r = run(args);
            remove(path);
            EXPECT(r.status == 2 && strstr(r.err, says[k]) && lines(r.err) == 1,
                   "case %d: status %d: %s", k, r.status, r.err);
        }
    }
    TEST_CASE("cli: list and --help work") {
        result r = run("list");
        EXPECT(r.status == 0 && strstr(r.out, "hyperclean") && strstr(r.out, "galet") && strstr(r.out, "accel"),
               "list: %d", r.status);
        r = run("list nonconvex");
        EXPECT(r.status == 0 && strstr(r.out, "method ait: ") && strstr(r.out, "ptt=1"), "list nonconvex: %s", r.out);
        const char *cmds[] = {"run --help", "compare --help", "gradcheck --help", "bench --help", "list --help", "--help"};
        for (int k = 0; k < 6; k++) {
            r = run(cmds[k]);
            EXPECT(r.status == 0 && strstr(r.out, "usage"), "%s: %d", cmds[k], r.status);
        }
    }
    TEST_CASE("cli: run --json reports the result; AIT_NC reaches x* on the nonconvex toy") {
        result r = run("run nonconvex --method ait --json");
        EXPECT(r.status == 0, "status %d: %s", r.status, r.err);
        const char *keys[] = {"\"problem\"", "\"method\"", "\"x\"", "\"F\"", "\"f\"", "\"x_err\"",
                              "\"ul_iters\": 2000", "\"seconds\"", "\"sec_per_ul_iter\"", "\"kbar_mean\"", "\"error\": null"};
        for (int k = 0; k < 11; k++) EXPECT(strstr(r.out, keys[k]) != NULL, "no %s in %s", keys[k], r.out);
        const char *xe = strstr(r.out, "\"x_err\": ");
        double e = xe ? atof(xe + 10) : 1;
        EXPECT(e < 1e-3, "x_err %g", e);
    }
    TEST_CASE("cli: the same command gives the same numbers") {
        result a = run("run quadratic --method rhg --ul-iters 20 --seed 3 --json");
        result b = run("run quadratic --method rhg --ul-iters 20 --seed 3 --json");
        // everything but the timings
        char *ta = strstr(a.out, "\"seconds\""), *tb = strstr(b.out, "\"seconds\"");
        EXPECT(ta && tb && ta - a.out == tb - b.out && !strncmp(a.out, b.out, (size_t)(ta - a.out)),
               "runs differ:\n%s\n%s", a.out, b.out);
    }
    TEST_CASE("cli: gradcheck agrees with central differences") {
        const char *cases[] = {"gradcheck nonconvex --method ait --json", "gradcheck llc --method trhg --json",
                               "gradcheck counterexample --method bda --json", "gradcheck lls --method rhg:nesterov+ia --json"};
        for (int k = 0; k < 4; k++) {
            result r = run(cases[k]);
            const char *w = strstr(r.out, "\"worst_rel_err\": ");
            double e = w ? atof(w + 17) : 1;
            EXPECT(r.status == 0 && e < 1e-6, "%s: status %d, worst %g: %s", cases[k], r.status, e, r.err);
        }
    }
    TEST_CASE("cli: a run stopped by an error exits 1 and keeps its last good iterate") {
        // an LL step far too large for the quadratic (eigenvalues up to 10) from x = 1: the LL
        // overflows during the first iteration, so x stays at the start
        result r = run("run quadratic --method rhg --s-l 30 --ul-iters 5 --json "
                       "--start=1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0");
        EXPECT(r.status == 1, "status %d", r.status);
        EXPECT(strstr(r.out, "\"ul_iters\": 0") && strstr(r.out, "\"x\": [1, 1, 1") &&
                   strstr(r.out, "\"error\": \"iteration 0:"),
               "%s", r.out);
        EXPECT(strstr(r.err, "stopped") && lines(r.err) == 1, "%s", r.err);
    }
}
