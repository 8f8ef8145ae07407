#!/usr/bin/python3
"""The issue's PyTorch reference cases, timed on this machine: what `hypertape bench bilevel`
compares against. PyTorch 1.13 in float64, torch on 1 thread, its products in the system's
OpenBLAS (Debian's python3-torch links libblas.so.3, which Debian points at OpenBLAS), written
the way hypertorch / higher unroll a lower level: autograd.grad(..., create_graph=True) per step.

    apt-get install python3-torch     # 1.13.1 from Debian's packages (PyPI is not needed)
    /usr/bin/python3 tools/bench_torch.py [--quick] [--out FILE]

Cases (the same problems, sizes, steps and starts as `hypertape bench bilevel`):
  (a) one RHG hypergradient, GD K = 100, dense quadratic n = 10 and n = 1000;
  (d) one UL iteration of data hyper-cleaning, linear model on 5000 FashionMNIST images:
      RHG with K = 100, and CG with K = 100 LL steps and J = 10 CG iterations; and the 2-layer
      model (784 -> 300 ReLU -> 10) with RHG, K = 20;
  (f) ConvNet-4 forward and backward on one task batch (as `hypertape bench autodiff` (f)).
Prints medians; with --out FILE also writes them as "case value" lines, which
`hypertape bench reference --torch FILE` compares with (tools/bench_vs_torch.sh alternates the
two so both see the same load on a shared machine).
"""
import ctypes
import gzip
import statistics
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
DATA = "/usr/share/datasets/fashion-mnist"
QUICK = "--quick" in sys.argv
OUT = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv[:-1] else None


def median_seconds(fn, reps, clock=time.perf_counter):
    fn()  # untimed: first-touch of buffers
    s = []
    for _ in range(reps):
        t0 = clock()
        fn()
        s.append(clock() - t0)
    return statistics.median(s)


# ---- (a) the dense quadratic: F = 1/2 ||y - b||^2 + rho/2 ||x||^2, f = 1/2 y^T A y - y^T B x ----

def quadratic(n, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g)
    A = torch.eye(n) + 0.5 * M @ M.T / n  # eigenvalues >= 1
    B = torch.randn(n, n, generator=g) / n ** 0.5
    b, x = torch.randn(n, generator=g), torch.randn(n, generator=g)
    L = A.abs().sum(1).max().item()  # Gershgorin: a safe GD step 1/L
    return A, B, b, x, 0.3, 1 / L


def rhg_quadratic(A, B, b, x0, rho, eta, K):
    x = x0.clone().requires_grad_()
    y = torch.zeros(len(b), requires_grad=True)
    Bx = B @ x
    for _ in range(K):
        f = 0.5 * y @ (A @ y) - y @ Bx
        (gy,) = torch.autograd.grad(f, y, create_graph=True)
        y = y - eta * gy
    F = 0.5 * ((y - b) ** 2).sum() + 0.5 * rho * (x ** 2).sum()
    (gx,) = torch.autograd.grad(F, x)
    return gx


# ---- (d) data hyper-cleaning, linear softmax regression ----

def idx_images(name, n):
    with gzip.open(f"{DATA}/{name}", "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, count=n * 784, offset=16).reshape(n, 784) / 255.0


def idx_labels(name, n):
    with gzip.open(f"{DATA}/{name}", "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, count=n, offset=8).astype(np.int64)


def hyperclean_data(n_tr=5000, n_val=5000, seed=0):
    X = torch.from_numpy(idx_images("train-images-idx3-ubyte.gz", n_tr + n_val))
    v = torch.from_numpy(idx_labels("train-labels-idx1-ubyte.gz", n_tr + n_val))
    g = torch.Generator().manual_seed(seed)
    v_tr = v[:n_tr].clone()
    bad = torch.rand(n_tr, generator=g) < 0.5  # half the training labels replaced at random
    v_tr[bad] = torch.randint(0, 10, (int(bad.sum()),), generator=g)
    return X[:n_tr].contiguous(), v_tr, X[n_tr:].contiguous(), v[n_tr:]


def f_lower(x, W, b, X, v):  # 1/n sum_i sigma(x_i) CE(X_i W + b, v_i)
    ce = torch.nn.functional.cross_entropy(X @ W + b, v, reduction="none")
    return (torch.sigmoid(x) * ce).mean()


def F_upper(W, b, X, v):
    return torch.nn.functional.cross_entropy(X @ W + b, v)


def hc_rhg(data, K=100, eta=0.3):
    Xt, vt, Xv, vv = data
    x = torch.zeros(len(vt), requires_grad=True)
    W, b = torch.zeros(784, 10, requires_grad=True), torch.zeros(10, requires_grad=True)
    for _ in range(K):
        gW, gb = torch.autograd.grad(f_lower(x, W, b, Xt, vt), (W, b), create_graph=True)
        W, b = W - eta * gW, b - eta * gb
    (gx,) = torch.autograd.grad(F_upper(W, b, Xv, vv), x)
    return gx


def f_lower_mlp(x, W1, b1, W2, b2, X, v):  # the same loss through 784 -> h (ReLU) -> 10
    z = torch.relu(X @ W1 + b1) @ W2 + b2
    return (torch.sigmoid(x) * torch.nn.functional.cross_entropy(z, v, reduction="none")).mean()


def hc_mlp_rhg(data, K=20, eta=0.3, h=300):
    Xt, vt, Xv, vv = data
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(len(vt), requires_grad=True)
    ps = [torch.randn(784, h, generator=g) / 784 ** 0.5, torch.zeros(h),
          torch.randn(h, 10, generator=g) / h ** 0.5, torch.zeros(10)]
    ps = [p.requires_grad_() for p in ps]
    for _ in range(K):
        gs = torch.autograd.grad(f_lower_mlp(x, *ps, Xt, vt), ps, create_graph=True)
        ps = [p - eta * gp for p, gp in zip(ps, gs)]
    W1, b1, W2, b2 = ps
    F = torch.nn.functional.cross_entropy(torch.relu(Xv @ W1 + b1) @ W2 + b2, vv)
    (gx,) = torch.autograd.grad(F, x)
    return gx


def hc_cg(data, K=100, J=10, eta=0.3):
    Xt, vt, Xv, vv = data
    x = torch.zeros(len(vt), requires_grad=True)
    W, b = torch.zeros(784, 10, requires_grad=True), torch.zeros(10, requires_grad=True)
    for _ in range(K):  # the LL solve: plain GD, no graph kept
        gW, gb = torch.autograd.grad(f_lower(x.detach(), W, b, Xt, vt), (W, b))
        with torch.no_grad():
            W -= eta * gW
            b -= eta * gb
    gFW, gFb = torch.autograd.grad(F_upper(W, b, Xv, vv), (W, b))
    g = torch.cat([gFW.flatten(), gFb])
    gy = torch.autograd.grad(f_lower(x, W, b, Xt, vt), (W, b), create_graph=True)
    gy = torch.cat([gy[0].flatten(), gy[1]])

    def hvp(d):
        h = torch.autograd.grad(gy, (W, b), d, retain_graph=True)
        return torch.cat([h[0].flatten(), h[1]])

    q, r, d = torch.zeros_like(g), g.clone(), g.clone()
    rr = r @ r
    for _ in range(J):  # H q = g by conjugate gradients, as bilevel/implicit.c
        Hd = hvp(d)
        a = rr / (d @ Hd)
        q, r = q + a * d, r - a * Hd
        rr2 = r @ r
        d, rr = r + rr2 / rr * d, rr2
    (mixed,) = torch.autograd.grad(gy, x, q)
    return -mixed  # F does not depend on x


# ---- (f) ConvNet-4: 4 x (conv 3x3, 32 filters, no bias; batch norm; ReLU; 2x2 max-pool), a linear
# head to 5 classes, mean cross-entropy; the gradient with respect to every parameter ----

def convnet_make(seed=21, n=320, ways=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, ways, (n,), generator=g)
    params = []
    for c_in in (1, 32, 32, 32):
        params.append((torch.randn(32, c_in, 3, 3, generator=g) * (2 / (9 * c_in)) ** 0.5).requires_grad_())
        params.append(torch.ones(32, requires_grad=True))
        params.append(torch.zeros(32, requires_grad=True))
    params.append((torch.randn(32, ways, generator=g) / 32 ** 0.5).requires_grad_())
    return x, y, params


def convnet_grad(x, y, params):
    F = torch.nn.functional
    h = x
    for b in range(4):
        w, gamma, beta = params[3 * b:3 * b + 3]
        h = F.conv2d(h, w, padding=1)
        h = F.relu(F.batch_norm(h, None, None, gamma, beta, training=True, eps=1e-5))
        h = F.max_pool2d(h, 2)
    loss = F.cross_entropy(h.flatten(1) @ params[-1], y)
    return torch.autograd.grad(loss, params)


def blas_name():
    """The BLAS torch's products run in: OpenBLAS's core and threads, if it is the one loaded."""
    with open("/proc/self/maps") as f:
        libs = sorted({w for line in f for w in line.split() if "openblas" in w and ".so" in w})
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return (f"OpenBLAS ({path}), core {lib.openblas_get_corename().decode()}, "
                    f"{lib.openblas_get_num_threads()} threads")
        except (OSError, AttributeError):
            continue
    return "a BLAS other than OpenBLAS"


def main():
    torch.ones(2, 2) @ torch.ones(2, 2)  # loads the BLAS
    print(f"PyTorch {torch.__version__}, float64, torch threads {torch.get_num_threads()}; "
          f"products in {blas_name()}")
    times = []  # (case, value) in the units `hypertape bench --torch` reads
    for n, torch_issue in ((10, 5.7), (1000, 36.7)):
        A, B, b, x, rho, eta = quadratic(n, 11 + n)
        reps = (50 if QUICK else 400) if n == 10 else (5 if QUICK else 21)
        ms = 1e3 * median_seconds(lambda: rhg_quadratic(A, B, b, x, rho, eta, 100), reps)
        print(f"(a) RHG hypergradient, GD K = 100, dense quadratic n = {n}: {ms:.3f} ms "
              f"(median of {reps}; the issue's reference machine: {torch_issue} ms)")
        times.append((f"quad{n}_ms", ms))
    data = hyperclean_data()
    reps = 1 if QUICK else 3
    for key, name, fn, torch_issue in (("hc_rhg_s", "rhg (K = 100)", hc_rhg, 1.2),
                                       ("hc_cg_s", "cg (K = 100, J = 10)", hc_cg, 0.64)):
        s = median_seconds(lambda: fn(data), reps)
        print(f"(d) hyper-cleaning 5000 x 784 x 10, linear, {name}: {s:.3f} s per UL iteration "
              f"(median of {reps}; the issue's reference machine: {torch_issue} s)")
        times.append((key, s))
    s = median_seconds(lambda: hc_mlp_rhg(data), reps)
    print(f"(d) hyper-cleaning 5000 x 784 x 300 x 10, 2 layers (ReLU), rhg (K = 20): {s:.3f} s per UL "
          f"iteration (median of {reps}; measured before on this machine: 2.17 s)")
    times.append(("hc_mlp_rhg_s", s))
    x, y, params = convnet_make()
    reps = 3 if QUICK else 11
    s = median_seconds(lambda: convnet_grad(x, y, params), reps)
    cpu = median_seconds(lambda: convnet_grad(x, y, params), reps, time.process_time)
    print(f"(f) ConvNet-4 forward + backward, 320 images 28 x 28 x 1, 32 filters: {s:.3f} s, "
          f"CPU {cpu:.3f} s (medians of {reps}; the issue's reference machine: 0.59 s)")
    times += [("convnet4_s", s), ("convnet4_cpu_s", cpu)]
    # hypertape runs its image kernels on 2 threads: PyTorch on 2 torch threads too, for reference
    torch.set_num_threads(2)
    s2 = median_seconds(lambda: convnet_grad(x, y, params), reps)
    cpu2 = median_seconds(lambda: convnet_grad(x, y, params), reps, time.process_time)
    torch.set_num_threads(1)
    print(f"    the same on 2 torch threads: {s2:.3f} s, CPU {cpu2:.3f} s")
    if OUT:
        with open(OUT, "w") as f:
            f.writelines(f"{k} {v:.6g}\n" for k, v in times)


if __name__ == "__main__":
    main()
