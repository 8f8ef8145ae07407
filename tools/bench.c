// Timing helpers for the benchmarks, and the PyTorch reference times they compare against.
#include "bench.h"

#include <cblas.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

const char *const bench_torch_keys[TORCH_CASES] = {"quad10_ms", "quad1000_ms", "hc_rhg_s", "hc_cg_s",
                                                   "hc_mlp_rhg_s", "convnet4_s", "convnet4_cpu_s"};

bench_opts bench_default_opts(void) {
    // PyTorch 1.13, float64, on the 2-core machine (AVX-512, torch 1 thread, OpenBLAS 2)
    // (the 2-layer case: measured on this machine by tools/bench_torch.py, OpenBLAS SkylakeX)
    return (bench_opts){.torch = {5.7, 36.7, 1.2, 0.64, 2.17, 0.59, 0.59}};
}

int bench_torch_read(const char *path, bench_opts *o, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    double v[TORCH_CASES];
    int seen[TORCH_CASES] = {0}, line = 0, rc = 0;
    char buf[256], key[64];
    while (!rc && fgets(buf, sizeof buf, f)) {
        line++;
        double x;
        char extra;
        if (sscanf(buf, " %c", &extra) != 1) continue; // a blank line
        if (sscanf(buf, "%63s %lf %c", key, &x, &extra) != 2 || !(x > 0) || !isfinite(x)) {
            snprintf(err, errlen, "%s:%d: expected a name and a positive time", path, line);
            rc = -1;
            continue; // ends the loop
        }
        int k = 0;
        while (k < TORCH_CASES && strcmp(key, bench_torch_keys[k])) k++;
        if (k < TORCH_CASES) v[k] = x, seen[k] = 1;
        else rc = -1, snprintf(err, errlen, "%s:%d: unknown case '%s'", path, line, key);
    }
    if (!rc && ferror(f)) rc = -1, snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno ? errno : EIO));
    fclose(f);
    for (int k = 0; !rc && k < TORCH_CASES; k++)
        if (!seen[k]) {
            snprintf(err, errlen, "%s: no time for case '%s'", path, bench_torch_keys[k]);
            rc = -1;
        }
    if (!rc) {
        memcpy(o->torch, v, sizeof v);
        o->torch_here = 1;
    }
    return rc;
}

size_t bench_proc_bytes(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0, len = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, len)) {
            kb = strtoul(line + len, NULL, 10);
            break;
        }
    fclose(f);
    return kb * 1024;
}

// Linux resets VmHWM to the current RSS on "5" > /proc/self/clear_refs (since 4.0).
int bench_reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

// The machine's dgemm rate: C [n, n] = A B with n = 1024 by cblas on OpenBLAS's threads, the
// best of a few calls (the host is shared: the best is the nearest to what it can do).
double bench_dgemm_peak(int quick) {
    enum { N = 1024 };
    double *A = malloc(sizeof(double) * N * N), *B = malloc(sizeof(double) * N * N);
    double *C = malloc(sizeof(double) * N * N), best = 0;
    if (!A || !B || !C) {
        free(A), free(B), free(C);
        return NAN;
    }
    for (size_t i = 0; i < (size_t)N * N; i++) A[i] = 1.0 / (double)(1 + i % 7), B[i] = 0.5 - (double)(i % 3);
    for (int r = 0; r < (quick ? 3 : 7); r++) {
        double t0 = bench_now();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0, A, N, B, N, 0.0, C, N);
        double g = 2e-9 * N * N * (double)N / (bench_now() - t0);
        if (r > 0 && g > best) best = g; // the first call touches the buffers
    }
    free(A), free(B), free(C);
    return best;
}
