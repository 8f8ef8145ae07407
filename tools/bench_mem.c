// `hypertape bench memory`: RHG through long unrolls in bounded memory. The lean sweep on the
// tridiagonal quadratic (GD, s_l = 0.1) under memory budgets (binomial checkpointing,
// blo_hypergrad_params.memory_budget) against the sweep over stored iterates: (a) at a size where
// both fit, time and peak RSS as the budget shrinks (the memory-time curve; tools/plot_memory.sh
// draws it from the rows starting "curve"); (b) n = 10^6, K = 10^4 under 200 MiB, where storing
// the iterates would take 80 GB. Each case runs in its own child, so its peak RSS is its own.
#include "bench.h"

#include "../bilevel/blo.h"
#include "../models/models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    int n, K;
    double budget_mib; // 0: store every state
    int momentum;      // 0 GD; 1 heavy ball (beta = 1/2); 2 the same, reversible
    // results
    int ok, slots;
    long long fwd_steps;
    size_t kept; // reversible: the bits kept, bytes
    double seconds, cpu, rss0_mb, peak_mb; // wall and CPU (user + system) seconds
    char msg[320]; // as blo_error.msg
} mem_case;

// This process's CPU time: the shared machine's load stretches wall time, not this.
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// In the child: the problem, one hypergradient, its time and the peak RSS around it.
static void mem_measure(mem_case *c) {
    char set[96];
    snprintf(set, sizeof set, "structure=tridiagonal n=%d", c->n);
    mdl_model m;
    if (mdl_make_named("quadratic", set, &m, c->msg, sizeof c->msg)) return;
    blo_dynamics d = c->momentum ? blo_dynamics_momentum(c->n, (blo_momentum_params){.s_l = 0.1, .beta = 0.5,
                                                          .reversible = c->momentum == 2})
                                 : blo_dynamics_gd(c->n, (blo_gd_params){.s_l = 0.1}); // A's eigenvalues < 10
    double *x = malloc(sizeof(double) * (size_t)c->n), *g = malloc(sizeof(double) * (size_t)c->n);
    ad_tape *t = ad_tape_new(NULL);
    if (!x || !g || !t) {
        snprintf(c->msg, sizeof c->msg, "out of memory");
    } else {
        for (int i = 0; i < c->n; i++) x[i] = 1 + 0.5 * sin(0.01 * i);
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = c->K, hp.tape = t, hp.graph_budget = 0;
        hp.memory_budget = (size_t)(c->budget_mib * 1048576.0);
        blo_hypergrad_info in;
        blo_error e;
        int reset = bench_reset_peak_rss();
        c->rss0_mb = (double)bench_proc_bytes("VmRSS:") / 1e6;
        double t0 = bench_now(), c0 = cpu_seconds();
        blo_status s = blo_hypergrad(&m.prob, &d, &hp, x, NULL, g, NULL, NULL, &in, &e);
        c->seconds = bench_now() - t0, c->cpu = cpu_seconds() - c0;
        c->peak_mb = reset ? (double)bench_proc_bytes("VmHWM:") / 1e6 : NAN;
        if (s) snprintf(c->msg, sizeof c->msg, "%s", e.msg);
        else c->ok = 1, c->slots = in.slots, c->fwd_steps = in.fwd_steps, c->kept = in.reversible_bytes;
    }
    ad_tape_free(t);
    free(x), free(g);
    mdl_free(&m);
}

// Runs the case in a child and reads its results back through a pipe.
static void mem_run(mem_case *c) {
    int fd[2];
    fflush(stdout);
    if (pipe(fd)) {
        snprintf(c->msg, sizeof c->msg, "cannot make a pipe");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        mem_measure(c);
        ssize_t w = write(fd[1], c, sizeof *c);
        _exit(w == (ssize_t)sizeof *c ? 0 : 1);
    }
    close(fd[1]);
    mem_case r;
    ssize_t got = pid > 0 ? read(fd[0], &r, sizeof r) : -1;
    close(fd[0]);
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    if (got == (ssize_t)sizeof r) *c = r;
    else snprintf(c->msg, sizeof c->msg, "the measuring child failed (status %d)", status);
}

static void print_row(const mem_case *c, double stored_s) {
    if (!c->ok) {
        printf("curve  %9.2f  FAILED: %s\n", c->budget_mib, c->msg);
        return;
    }
    printf("curve  %9.2f  %6d  %10lld  %8.2f  %8.2f  %6.2f  %9.1f  %8.2f\n", c->budget_mib, c->slots,
           c->fwd_steps, (double)(c->fwd_steps - c->K) / c->K, c->cpu,
           stored_s > 0 ? c->cpu / stored_s : NAN, c->peak_mb, c->seconds);
}

// (c) heavy ball (beta = 1/2): stored states, checkpointing in 26 states, and the exactly
// reversible option (1 bit per entry per step).
static void bench_reversible(const bench_opts *o) {
    int n = o->quick ? 1000 : 10000, K = o->quick ? 1000 : 4000;
    const char *names[] = {"stored", "checkpointed", "reversible"};
    printf("(c) heavy ball, n = %d, K = %d (states of 2n doubles; stored %.1f MB)\n", n, K, (K + 1.0) * 2 * n * 8 / 1e6);
    double t0 = NAN;
    for (int v = 0; v < 3; v++) {
        mem_case c = {.n = n, .K = K, .momentum = v == 2 ? 2 : 1,
                      .budget_mib = v == 1 ? 26.2144 * 16.0 * n / 1048576.0 : 0};
        mem_run(&c);
        if (!c.ok) {
            printf("    %-13s FAILED: %s\n", names[v], c.msg);
            continue;
        }
        if (v == 0) t0 = c.cpu;
        printf("    %-13s %8.2f s CPU (%.2fx)  peak RSS %7.1f MB  forward steps %lld%s", names[v], c.cpu,
               c.cpu / t0, c.peak_mb, c.fwd_steps, v == 1 ? "" : "\n");
        if (v == 1) printf(", %d slots\n", c.slots);
        if (v == 2) printf("                  kept bits %.2f MB\n", (double)c.kept / 1e6);
    }
}

void bench_checkpoint(const bench_opts *o) {
    // (a) both fit: n = 10^4, K = 10^4 stores 800 MB; the budgets go down to c = 18 slots and below
    int n = o->quick ? 1000 : 10000, K = o->quick ? 2000 : 10000;
    double state_mib = 8.0 * n / 1048576.0;
    // budgets as counts of states: every one stored, then fewer slots (7 states go to x, the
    // adjoint and scratch); 26.2144 states is (b)'s 200 MiB of 8 MB states: the same slots c
    const double same_as_b = 26.2144, states[] = {0, 2500, 600, 150, 50, same_as_b, 16};
    printf("bench memory: RHG (lean sweep) on the tridiagonal quadratic, GD s_l = 0.1, x_i = 1 + sin(i/100)/2\n");
    printf("(a) n = %d, K = %d: stored iterates (K+1) n 8 B = %.1f MB; budgets in MiB\n", n, K,
           (K + 1.0) * n * 8 / 1e6);
    printf("#      budget_MiB  slots  fwd_steps  recomp/K  cpu_s  x_stored  peak_RSS_MB  wall_s\n");
    double stored_s = 0, ratio_c = NAN;
    int c_ref = 0;
    for (size_t i = 0; i < sizeof states / sizeof *states; i++) {
        mem_case c = {.n = n, .K = K, .budget_mib = states[i] * state_mib};
        mem_run(&c);
        if (i == 0 && c.ok) stored_s = c.cpu;
        print_row(&c, stored_s);
        if (c.ok && states[i] == same_as_b) ratio_c = c.cpu / stored_s, c_ref = c.slots;
    }
    // (b) the long unroll: 200 MiB for states of 8 MB
    mem_case big = {.n = o->quick ? 100000 : 1000000, .K = o->quick ? 1000 : 10000,
                    .budget_mib = o->quick ? 20 : 200};
    mem_run(&big);
    double stored_gb = (big.K + 1.0) * big.n * 8 / 1e9;
    if (!big.ok) {
        printf("(b) n = %d, K = %d, budget %.0f MiB: FAILED: %s\n", big.n, big.K, big.budget_mib, big.msg);
        return;
    }
    printf("(b) n = %d, K = %d under %.0f MiB (storing the iterates: %.1f GB): %.1f s CPU (%.1f s wall), peak RSS %.1f MB"
           " (%.1f MB before the call: the problem), %d slots, %lld forward steps (%.2f K recomputed,"
           " t(K, c) + 1 = %lld)\n",
           big.n, big.K, big.budget_mib, stored_gb, big.cpu, big.seconds, big.peak_mb, big.rss0_mb, big.slots,
           big.fwd_steps, (double)(big.fwd_steps - big.K) / big.K, blo_revolve_steps(big.K, big.slots) + 1);
    printf("    CPU time against the stored sweep: %.2fx at n = %d, K = %d with %d slots (target <= 3x)\n", ratio_c,
           n, K, c_ref);
    bench_reversible(o);
}
