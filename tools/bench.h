// Shared by the benchmarks: timing and medians, and the options `hypertape bench` passes.
#ifndef HYPERTAPE_BENCH_H
#define HYPERTAPE_BENCH_H

#include <stddef.h>

// The PyTorch reference cases: (a) RHG on the quadratic with n = 10 and n = 1000 (ms),
// (d) one UL iteration of hyper-cleaning with RHG and with CG (s), and one UL iteration of RHG
// (K = 20) on the 2-layer model, hidden 300 (s); autodiff (f) ConvNet-4 forward and backward (s),
// and the CPU seconds of its threads (less sensitive to a loaded host).
enum { TORCH_QUAD10, TORCH_QUAD1000, TORCH_HC_RHG, TORCH_HC_CG, TORCH_HC_MLP, TORCH_CONVNET4,
       TORCH_CONVNET4_CPU, TORCH_CASES };
extern const char *const bench_torch_keys[TORCH_CASES];

typedef struct {
    int quick;          // fewer repeats (for the README's first command and CI)
    int reference_only; // bilevel: only the cases with a PyTorch reference, (a) and (d)
    // PyTorch's times for those cases: the reference machine's, or (torch_here) the ones
    // tools/bench_torch.py measured on this machine (--torch FILE)
    double torch[TORCH_CASES];
    int torch_here;
} bench_opts;

// Options with the reference times.
bench_opts bench_default_opts(void);
// Reads the times tools/bench_torch.py --out wrote into o (one "key value" line per case, every
// case present); on failure returns -1 with one line in err naming the file and what is wrong.
int bench_torch_read(const char *path, bench_opts *o, char *err, size_t errlen);

double bench_now(void);                  // monotonic seconds
double bench_median(double *x, int n);   // sorts x
// GFLOP/s of cblas_dgemm on [1024, 1024] x [1024, 1024], best of a few calls: the peak the
// benchmarks' products are judged against.
double bench_dgemm_peak(int quick);
void bench_autodiff(const bench_opts *o);
void bench_bilevel(const bench_opts *o);
void bench_checkpoint(const bench_opts *o); // `bench memory`: bench_mem.c
// "VmHWM:" or "VmRSS:" of this process in bytes (0 if /proc is not there).
size_t bench_proc_bytes(const char *key);
// Resets the peak RSS (VmHWM) to the current RSS; returns 1 if the kernel allows it.
int bench_reset_peak_rss(void);
void bench_convnet(const bench_opts *o); // autodiff (f), bench_image.c
void bench_fhg(const bench_opts *o); // bench_fhg.c: forward against reverse mode

#endif
