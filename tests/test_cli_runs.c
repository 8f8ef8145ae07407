// The command's runs as a user meets them: gradcheck's verdicts, repeating a run from its JSON
// settings, saving and resuming (also after SIGINT / SIGTERM) to the same bits, a trace whose last
// row describes the returned x, output that cannot be written, and compare's method lists.
#include "cli_util.h"
#include "harness.h"
#include "tests.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// The text of the "x" array in a JSON report (a copy, to compare runs bit for bit), or "".
static void x_of(const char *json, char *buf, size_t n) {
    const char *a = strstr(json, "\"x\": ["), *b = a ? strchr(a, ']') : NULL;
    snprintf(buf, n, "%.*s", a && b ? (int)(b - a) : 0, a ? a : "");
}

static double number_of(const char *json, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(json, k);
    return p ? atof(p + strlen(k)) : NAN;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void temp_path(char *buf, size_t n, const char *what) {
    snprintf(buf, n, "/tmp/hypertape-%s-%d-%ld", what, (int)getpid(), (long)time(NULL));
}

static void gradcheck_cases(void) {
    TEST_CASE("cli: gradcheck gives a verdict: Neumann with J = 2 fails at rtol 1e-6 (exit 1), RHG passes") {
        cli_result r = cli_exec("gradcheck quadratic --method neumann --J 2 --rtol 1e-6");
        EXPECT(r.status == 1 && strstr(r.out, "FAIL") && strstr(r.err, "FAIL"), "%d: %s %s", r.status, r.out, r.err);
        r = cli_exec("gradcheck quadratic --method rhg");
        EXPECT(r.status == 0 && strstr(r.out, "PASS"), "%d: %s %s", r.status, r.out, r.err);
        r = cli_exec("gradcheck quadratic --method rhg --json");
        EXPECT(r.status == 0 && strstr(r.out, "\"verdict\": \"PASS\"") && strstr(r.out, "\"claim\": \"exact\"") &&
                   number_of(r.out, "worst_rel_err") < 1e-6, "%s", r.out);
    }
    TEST_CASE("cli: gradcheck agrees with central differences across methods, dynamics and truncation") {
        const char *cases[] = {"gradcheck nonconvex --method ait --json", "gradcheck llc --method trhg --json",
                               "gradcheck counterexample --method bda --json",
                               "gradcheck lls --method rhg:nesterov+ia --json",
                               "gradcheck sin --method aitp --prior 0.5 --json"};
        for (int k = 0; k < 5; k++) {
            cli_result r = cli_exec(cases[k]);
            EXPECT(r.status == 0 && number_of(r.out, "worst_rel_err") < 1e-6, "%s: status %d: %s %s", cases[k],
                   r.status, r.out, r.err);
        }
    }
}

static void settings_cases(void) {
    TEST_CASE("cli: --settings repeats an earlier run bit for bit, with every setting in its report") {
        char path[256], args[400];
        temp_path(path, sizeof path, "settings.json");
        snprintf(args, sizeof args, "run counterexample --method ait --warm-start --ul-iters 40 --s-l 0.25 --json > %s", path);
        cli_result a = cli_exec(args);
        EXPECT(a.status == 0, "%s", a.err);
        snprintf(args, sizeof args, "run --settings %s --json", path);
        cli_result b = cli_exec(args);
        FILE *f = fopen(path, "r");
        char first[8192] = "", xa[4096], xb[4096];
        if (f) first[fread(first, 1, sizeof first - 1, f)] = 0, fclose(f);
        x_of(first, xa, sizeof xa);
        x_of(b.out, xb, sizeof xb);
        EXPECT(b.status == 0 && *xa && !strcmp(xa, xb), "x %s vs %s: %s", xa, xb, b.err);
        // every setting that affected the run is there, the ones left at their defaults too
        const char *keys[] = {"\"warm_start\": true", "\"s_l\": 0.25", "\"dynamics\": {\"name\": \"bda\"",
                              "\"bda_weights\": \"ait\"", "\"ul_iters\": 40", "\"start_index\": 0", "\"graph_mb\""};
        for (int k = 0; k < 7; k++) EXPECT(strstr(first, keys[k]), "no %s in %s", keys[k], first);
        snprintf(args, sizeof args, "run --settings %s --ul-iters 41 --json", path); // options apply on top
        b = cli_exec(args);
        EXPECT(b.status == 0 && strstr(b.out, "\"ul_iters\": 41"), "%s", b.err);
        remove(path);
    }
    TEST_CASE("cli: settings are written as set, so options on top compose as on a fresh run") {
        char path[256], args[400];
        temp_path(path, sizeof path, "trhg.json");
        snprintf(args, sizeof args, "run counterexample --method trhg --ul-iters 3 --json > %s", path);
        cli_result a = cli_exec(args);
        snprintf(args, sizeof args, "run --settings %s --ll-iters 10 --json", path);
        cli_result b = cli_exec(args);
        snprintf(args, sizeof args, "run counterexample --method trhg --ul-iters 3 --ll-iters 10 --json");
        cli_result c = cli_exec(args);
        char xb[512], xc[512];
        x_of(b.out, xb, sizeof xb), x_of(c.out, xc, sizeof xc);
        EXPECT(a.status == 0 && b.status == 0 && strstr(b.out, "\"truncate\": -1") && *xb && !strcmp(xb, xc),
               "%s vs %s: %s", xb, xc, b.err);
        cli_result d = cli_exec("run counterexample --method trhg --ll-iters 10 --truncate 20");
        EXPECT(d.status == 2 && strstr(d.err, "truncate = 20 is more than ll_iters = 10"), "%s", d.err);
        remove(path);
    }
    TEST_CASE("cli: a malformed settings file is one line, exit 2 (groups not objects, a cut \\u escape)") {
        const char *bodies[] = {("{\"settings\": {\"problem\": {\"name\": \"sin\"}, \"method\": {\"name\": \"rhg\"}, "
                                 "\"solver\": [1]}}"), // one string, cut in two (clang: -Wstring-concatenation)
                                "{\"settings\": {\"problem\": [1, 2], \"method\": {\"name\": \"rhg\"}, \"solver\": {}}}",
                                "{\"settings\": \"\\u", "{\"settings\": \"\\u12", "[[[[[[[["};
        for (int k = 0; k < 5; k++) {
            char path[256], args[400];
            temp_path(path, sizeof path, "bad.json");
            FILE *f = fopen(path, "w");
            if (f) fputs(bodies[k], f), fclose(f);
            snprintf(args, sizeof args, "run --settings %s", path);
            cli_result r = cli_exec(args);
            EXPECT(r.status == 2 && cli_lines(r.err) == 1, "case %d: status %d: %s", k, r.status, r.err);
            remove(path);
        }
    }
}

// `hypertape ARGS` started in the background, stdout and stderr into files; its pid.
static pid_t start(const char *args, const char *out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s %s > %s 2>&1", cli_binary(), args, out);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

// Lines in a file (0 if it cannot be read).
static int file_lines(const char *path) {
    FILE *f = fopen(path, "r");
    int n = 0, c;
    while (f && (c = fgetc(f)) != EOF) n += c == '\n';
    if (f) fclose(f);
    return n;
}

// Runs ARGS with --checkpoint and --trace, sends sig once the trace has `rows` rows, and checks
// that it stops with 128 + sig, having saved its state and a whole trace whose last row is the
// final record; then `run --resume` with RESUME_ARGS must end with the bits of `straight`.
static void interrupt_and_resume(const char *args, const char *resume_args, const char *straight, int sig, int rows) {
    char state[256], trace[256], out[256], cmd[1200];
    temp_path(state, sizeof state, "state");
    temp_path(trace, sizeof trace, "trace.csv");
    temp_path(out, sizeof out, "out");
    cli_result ref = cli_exec(straight);
    EXPECT(ref.status == 0, "%s: %s", straight, ref.err);
    snprintf(cmd, sizeof cmd, "%s --checkpoint %s --trace %s --json", args, state, trace);
    pid_t pid = start(cmd, out);
    for (int waited = 0; waited < 60000 && file_lines(trace) < rows + 1; waited++) sleep_ms(1);
    kill(pid, sig);
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 128 + sig, "%s: exit status %d", args, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    // the trace: whole rows, the last one the final record, the same F as the report's
    FILE *f = fopen(trace, "r");
    char line[1024] = "", last[1024] = "", report[8192] = "";
    int n = 0;
    while (f && fgets(line, sizeof line, f)) snprintf(last, sizeof last, "%s", line), n++;
    if (f) fclose(f);
    f = fopen(out, "r");
    if (f) report[fread(report, 1, sizeof report - 1, f)] = 0, fclose(f);
    size_t len = strlen(last);
    char *comma = strrchr(last, ',');
    EXPECT(n >= rows + 2 && len && last[len - 1] == '\n' && comma && atoi(comma + 1) == 1,
           "%s: %d lines, last '%s'", args, n, last);
    double F_trace = atof(strchr(last, ',') ? strchr(last, ',') + 1 : "nan");
    EXPECT(F_trace == number_of(report, "F") && strstr(report, "interrupted"), "%s: trace F %.17g, report %s", args,
           F_trace, report);
    snprintf(cmd, sizeof cmd, "run --resume %s %s --json", state, resume_args);
    cli_result r = cli_exec(cmd);
    char xa[4096], xb[4096];
    x_of(ref.out, xa, sizeof xa);
    x_of(r.out, xb, sizeof xb);
    EXPECT(r.status == 0 && *xa && !strcmp(xa, xb) && number_of(r.out, "F") == number_of(ref.out, "F"),
           "%s: resumed x differs (%d: %s)\n  straight %.200s\n  resumed  %.200s", args, r.status, r.err, xa, xb);
    remove(state), remove(trace), remove(out);
}

static void resume_cases(void) {
    TEST_CASE("cli: run --checkpoint S then run --resume S --ul-iters 6 gives the x of 6 straight (hyper-cleaning)") {
        char state[256], cmd[600];
        temp_path(state, sizeof state, "hc-state");
        const char *hc = "run hyperclean --method rhg --warm-start --ll-iters 20 --set n_train=100 --set n_val=500 "
                         "--set n_test=500";
        snprintf(cmd, sizeof cmd, "%s --ul-iters 6 --json", hc);
        cli_result a = cli_exec(cmd);
        snprintf(cmd, sizeof cmd, "%s --ul-iters 3 --checkpoint %s", hc, state);
        cli_result b = cli_exec(cmd);
        snprintf(cmd, sizeof cmd, "run --resume %s --ul-iters 6 --json", state);
        cli_result c = cli_exec(cmd);
        char xa[8192], xc[8192];
        x_of(a.out, xa, sizeof xa);
        x_of(c.out, xc, sizeof xc);
        EXPECT(a.status == 0 && b.status == 0 && c.status == 0 && *xa && !strcmp(xa, xc) &&
                   number_of(a.out, "test_acc") == number_of(c.out, "test_acc") && strstr(c.out, "\"ul_iters\": 6"),
               "%d %d %d: %s %s", a.status, b.status, c.status, b.err, c.err);
        snprintf(cmd, sizeof cmd, "run --resume %s --s-l 0.2 --json", state); // not the saved run
        cli_result d = cli_exec(cmd);
        EXPECT(d.status == 2 && strstr(d.err, "s_l=0.3") && strstr(d.err, "s_l=0.2") && cli_lines(d.err) == 1, "%s", d.err);
        remove(state);
    }
    TEST_CASE("cli: SIGINT stops a hyper-cleaning run (Adam, warm start) after its iteration; resumed, the same bits") {
        const char *hc = "run hyperclean --method rhg --warm-start --ll-iters 10 --set n_train=100 --set n_val=300 "
                         "--set n_test=300";
        char args[600], straight[600];
        snprintf(args, sizeof args, "%s --ul-iters 400", hc);
        snprintf(straight, sizeof straight, "%s --ul-iters 60 --json", hc);
        interrupt_and_resume(args, "--ul-iters 60", straight, SIGINT, 2);
    }
    TEST_CASE("cli: SIGTERM stops GALET and BVFIM runs; resumed, they end with the same bits (their state saved)") {
        interrupt_and_resume("run pl --method galet --ul-iters 2000000", "--ul-iters 20000",
                             "run pl --method galet --ul-iters 20000 --json", SIGTERM, 2);
        interrupt_and_resume("run sin --method bvfim --ul-iters 100000", "--ul-iters 2000",
                             "run sin --method bvfim --ul-iters 2000 --json", SIGINT, 2);
    }
}

static void output_cases(void) {
    TEST_CASE("cli: output that cannot be written is an error (exit 1), not a silent loss") {
        cli_result r = cli_exec("run nonconvex --method rhg --ul-iters 5 --trace /dev/full");
        EXPECT(r.status == 1 && strstr(r.err, "/dev/full") && cli_lines(r.err) == 1, "%d: %s", r.status, r.err);
        r = cli_exec("run nonconvex --method rhg --ul-iters 5 --json > /dev/full");
        EXPECT(r.status == 1 && strstr(r.err, "cannot write the report") && cli_lines(r.err) == 1, "%d: %s", r.status, r.err);
        r = cli_exec("gradcheck quadratic --method rhg --json > /dev/full");
        EXPECT(r.status == 1 && strstr(r.err, "cannot write"), "%d: %s", r.status, r.err);
        r = cli_exec("compare nonconvex --methods rhg --ul-iters 5 > /dev/full");
        EXPECT(r.status == 1 && strstr(r.err, "cannot write"), "%d: %s", r.status, r.err);
        r = cli_exec("list > /dev/full");
        EXPECT(r.status == 1, "list: %d", r.status);
        // a figure that cannot be drawn there, the path a directory: refused before any method
        // runs (status 2), so no data is written for it
        char dir[256], args[400];
        temp_path(dir, sizeof dir, "plotdir");
        snprintf(args, sizeof args, "compare nonconvex --methods rhg --ul-iters 5 --plot %s", dir);
        if (mkdir(dir, 0700) == 0) {
            r = cli_exec(args);
            char dat[300];
            snprintf(dat, sizeof dat, "%s.dat", dir);
            EXPECT(r.status == 2 && strstr(r.err, "is a directory") && cli_lines(r.err) == 1 && !r.out[0] &&
                       access(dat, F_OK) != 0, "%d: %s", r.status, r.err);
            remove(dat);
            rmdir(dir);
        }
    }
    TEST_CASE("cli: a run stopped by an error reports valid JSON (NaN as null) and its last good iterate") {
        // an LL step far too large for the quadratic (eigenvalues up to 10) from x = 1: the LL
        // overflows during the first iteration, so x stays at the start
        cli_result r = cli_exec("run quadratic --method rhg --s-l 30 --ul-iters 5 --json "
                                "--start=1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0");
        EXPECT(r.status == 1 && strstr(r.out, "\"ul_iters\": 0") && strstr(r.out, "\"x\": [1, 1, 1") &&
                   strstr(r.out, "\"error\": \"iteration 0:") && strstr(r.out, "\"F\": null") &&
                   !strstr(r.out, ": nan") && !strstr(r.out, ": -nan") && !strstr(r.out, ": inf"),
               "%s", r.out);
        EXPECT(strstr(r.err, "stopped") && cli_lines(r.err) == 1, "%s", r.err);
    }
}

static void compare_cases(void) {
    TEST_CASE("cli: compare plans every method before running any, and takes any number of them") {
        cli_result r = cli_exec("compare nonconvex --methods rhg,cg,foo --ul-iters 5");
        EXPECT(r.status == 2 && strstr(r.err, "unknown method 'foo'") && r.out[0] == 0, "ran before refusing: %s", r.out);
        char args[400] = "compare quadratic --ul-iters 2 --methods rhg";
        for (int k = 1; k < 20; k++) strcat(args, k % 2 ? ",cg" : ",rhg:nesterov");
        r = cli_exec(args);
        EXPECT(r.status == 0 && cli_lines(r.out) == 21, "%d rows: %s", cli_lines(r.out) - 1, r.err);
    }
#ifndef __SANITIZE_ADDRESS__ // AddressSanitizer's shadow memory does not fit such a limit
    TEST_CASE("cli: compare keeps nothing per iteration (2e8 iterations under a 200 MB address-space limit run)") {
        pid_t pid = fork();
        if (pid == 0) {
            struct rlimit lim = {200u << 20, 200u << 20};
            setrlimit(RLIMIT_AS, &lim);
            char cmd[512];
            snprintf(cmd, sizeof cmd, "exec %s compare nonconvex --methods rhg --ul-iters 200000000 > /dev/null 2>&1",
                     cli_binary());
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        sleep_ms(1500);
        int st = 0;
        pid_t done = waitpid(pid, &st, WNOHANG);
        if (!done) kill(pid, SIGKILL), waitpid(pid, &st, 0);
        EXPECT(!done && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "it stopped by itself: %s %d",
               WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    }
#endif
}

void test_cli_runs(void) {
    gradcheck_cases();
    settings_cases();
    resume_cases();
    output_cases();
    compare_cases();
}
