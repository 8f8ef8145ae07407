// Shared by the benchmarks: timing and medians, and the options `hypertape bench` passes.
#ifndef HYPERTAPE_BENCH_H
#define HYPERTAPE_BENCH_H

typedef struct {
    int quick; // fewer repeats (for the README's first command and CI)
} bench_opts;

double bench_now(void);                  // monotonic seconds
double bench_median(double *x, int n);   // sorts x
void bench_autodiff(const bench_opts *o);
void bench_bilevel(const bench_opts *o);

#endif
