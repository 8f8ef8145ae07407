// The IDX reader and the hyper-cleaning data split. zlib's gzread reads gzip and raw files
// alike; every short read, bad header or inconsistent pair of files is an error naming the path.
// A header's claimed size is never allocated on trust: see read_data.
#include "data.h"

#include "ad.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int mdl_fail(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void mdl_adam_step(double *w, const double *g, double *m1, double *m2, size_t n, double lr, double c1,
                   double c2) {
    for (size_t i = 0; i < n; i++) {
        m1[i] = 0.9 * m1[i] + 0.1 * g[i], m2[i] = 0.999 * m2[i] + 0.001 * g[i] * g[i];
        w[i] -= lr * (m1[i] / c1) / (sqrt(m2[i] / c2) + 1e-8);
    }
}

// Reads exactly len bytes; returns how many were read, or -1 on a zlib error (message in zmsg).
static long read_full(gzFile f, void *buf, size_t len, const char **zmsg) {
    size_t got = 0;
    while (got < len) {
        size_t chunk = len - got > (1u << 30) ? (1u << 30) : len - got;
        int r = gzread(f, (char *)buf + got, (unsigned)chunk);
        if (r < 0) {
            int code;
            *zmsg = gzerror(f, &code);
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long)got;
}

// Reads the magic and the dimension list into out; *size is the product of the dims. Returns 0
// or -1 with the message.
static int read_header(gzFile f, const char *path, mdl_idx *out, size_t *size, char *err, size_t errlen) {
    const char *zmsg = "";
    uint8_t head[4], dims[16];
    long r = read_full(f, head, 4, &zmsg);
    if (r < 0) return mdl_fail(err, errlen, "%s: corrupt compressed data: %s", path, zmsg);
    if (r < 4) return mdl_fail(err, errlen, "%s: truncated: the 4-byte IDX header is missing", path);
    if (head[0] || head[1])
        return mdl_fail(err, errlen, "%s: not an IDX file (magic %02x %02x %02x %02x)", path, head[0], head[1], head[2], head[3]);
    if (head[2] != 0x08) return mdl_fail(err, errlen, "%s: IDX data type 0x%02x is not unsigned bytes (0x08)", path, head[2]);
    if (head[3] < 1 || head[3] > 4) return mdl_fail(err, errlen, "%s: IDX with %d dimensions (1 to 4 supported)", path, head[3]);
    out->ndim = head[3];
    r = read_full(f, dims, (size_t)4 * out->ndim, &zmsg);
    if (r < 0) return mdl_fail(err, errlen, "%s: corrupt compressed data: %s", path, zmsg);
    if (r < 4 * out->ndim) return mdl_fail(err, errlen, "%s: truncated in the dimension list", path);
    *size = 1;
    for (int i = 0; i < out->ndim; i++) {
        uint32_t d = (uint32_t)dims[4 * i] << 24 | (uint32_t)dims[4 * i + 1] << 16 |
                     (uint32_t)dims[4 * i + 2] << 8 | dims[4 * i + 3];
        if (d == 0 || d > (1u << 28) || *size > ((size_t)1 << 34) / d)
            return mdl_fail(err, errlen, "%s: implausible dimension %d = %u", path, i, d);
        out->dims[i] = (int32_t)d;
        *size *= d;
    }
    return 0;
}

// Reads up to size bytes into *data, a buffer of first bytes grown by doubling (at most to size)
// as the data arrives: a file claiming more than it holds costs at most twice what it holds.
// Returns the bytes read, -1 on a zlib error (message in zmsg), -2 when out of memory; *data is
// the caller's to free in every case.
static long read_growing(gzFile f, size_t size, size_t first, uint8_t **data, const char **zmsg) {
    size_t cap = first < size ? first : size, got = 0;
    *data = malloc(cap);
    if (!*data) return -2;
    for (;;) {
        long r = read_full(f, *data + got, cap - got, zmsg);
        if (r < 0) return -1;
        got += (size_t)r;
        if (got < cap || cap == size) return (long)got;
        cap = cap > size / 2 ? size : 2 * cap;
        uint8_t *grown = realloc(*data, cap);
        if (!grown) return -2;
        *data = grown;
    }
}

// The data after the header: size bytes and nothing more. A raw regular file (gzdirect) is
// checked against its length before anything is allocated; gzip and pipes grow their buffer
// from 1 MiB as the data arrives (their length is only known by reading them).
static int read_data(gzFile f, const struct stat *st, const char *path, mdl_idx *out, size_t size,
                     char *err, size_t errlen) {
    size_t first = (size_t)1 << 20;
    if (gzdirect(f) && S_ISREG(st->st_mode)) {
        long long left = (long long)st->st_size - 4 - 4 * out->ndim;
        if (left < (long long)size)
            return mdl_fail(err, errlen, "%s: truncated: %zu bytes of data expected, %lld in the file", path, size, left);
        first = size;
    }
    const char *zmsg = "";
    long r = read_growing(f, size, first, &out->data, &zmsg);
    if (r == -2) return mdl_fail(err, errlen, "%s: out of memory for %zu bytes", path, size);
    if (r < 0) return mdl_fail(err, errlen, "%s: corrupt compressed data: %s", path, zmsg);
    if ((size_t)r < size)
        return mdl_fail(err, errlen, "%s: truncated: %zu bytes of data expected, %ld found", path, size, r);
    uint8_t extra;
    if ((r = read_full(f, &extra, 1, &zmsg)) != 0)
        return mdl_fail(err, errlen, "%s: %s after the %zu data bytes", path,
                        r < 0 ? "corrupt compressed data" : "unexpected extra bytes", size);
    return 0;
}

int mdl_idx_read(const char *path, mdl_idx *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    // opened here rather than by gzopen, for the raw file's length (fstat)
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    gzFile f = NULL;
    if (fd >= 0 && !fstat(fd, &st)) f = gzdopen(fd, "rb");
    if (!f) {
        int e = errno ? errno : ENOMEM;
        if (fd >= 0) close(fd);
        return mdl_fail(err, errlen, "%s: cannot open: %s", path, strerror(e));
    }
    size_t size = 0;
    int rc = read_header(f, path, out, &size, err, errlen);
    if (!rc) rc = read_data(f, &st, path, out, size, err, errlen);
    gzclose(f);
    if (rc) mdl_idx_free(out);
    else out->size = size;
    return rc;
}

void mdl_idx_free(mdl_idx *m) {
    free(m->data);
    memset(m, 0, sizeof *m);
}

// dir/name, or dir/name.gz when only that exists.
static void find_file(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    FILE *f = fopen(buf, "rb");
    if (f) {
        fclose(f);
        return;
    }
    snprintf(buf, n, "%s/%s.gz", dir, name);
}

// The images and labels files of one MNIST-format set, checked against each other.
static int load_pair(const char *dir, const char *prefix, mdl_idx *im, mdl_idx *lb, char *err,
                     size_t errlen) {
    char ip[4096], lp[4096], name[256];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    find_file(ip, sizeof ip, dir, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    find_file(lp, sizeof lp, dir, name);
    if (mdl_idx_read(ip, im, err, errlen)) return -1;
    if (mdl_idx_read(lp, lb, err, errlen)) {
        mdl_idx_free(im);
        return -1;
    }
    int rc = 0;
    if (im->ndim != 3) rc = mdl_fail(err, errlen, "%s: images must have 3 dimensions, not %d", ip, im->ndim);
    else if (lb->ndim != 1) rc = mdl_fail(err, errlen, "%s: labels must have 1 dimension, not %d", lp, lb->ndim);
    else if (im->dims[0] != lb->dims[0])
        rc = mdl_fail(err, errlen, "%s holds %d images but %s holds %d labels", ip, im->dims[0], lp, lb->dims[0]);
    for (size_t i = 0; !rc && i < lb->size; i++)
        if (lb->data[i] > 9) rc = mdl_fail(err, errlen, "%s: label %zu is %d, not in 0..9", lp, i, lb->data[i]);
    if (rc) {
        mdl_idx_free(im);
        mdl_idx_free(lb);
    }
    return rc;
}

int mdl_dataset_alloc(mdl_dataset *out, int n, int d, int classes) {
    uint8_t *codes = malloc((size_t)n * d + 1);
    double *table = malloc(256 * sizeof(double)), *X = malloc((size_t)n * d * sizeof(double) + 1);
    *out = (mdl_dataset){.n = n, .d = d, .classes = classes, .X = X, .y = calloc((size_t)n + 1, sizeof(int32_t)),
                         .Xc = {n, d, codes, table, X, NULL, NULL}};
    if (!out->X || !out->y || !codes || !table) {
        mdl_dataset_free(out);
        return -1;
    }
    for (int p = 0; p < 256; p++) table[p] = p / 255.0;
    return 0;
}

void mdl_dataset_decode(mdl_dataset *ds) {
    const uint8_t *codes = ds->Xc.codes;
    for (size_t k = 0; k < (size_t)ds->n * (size_t)ds->d; k++) ds->X[k] = ds->Xc.table[codes[k]];
}

// Rows idx[0..n) (all rows when idx is NULL) of a checked pair, pixels scaled to [0, 1].
static int convert(const mdl_idx *im, const mdl_idx *lb, const int32_t *idx, int n, mdl_dataset *out) {
    int d = im->dims[1] * im->dims[2];
    if (mdl_dataset_alloc(out, n, d, 10)) return -1;
    uint8_t *codes = (uint8_t *)out->Xc.codes;
    for (int i = 0; i < n; i++) {
        size_t r = idx ? (size_t)idx[i] : (size_t)i;
        memcpy(codes + (size_t)i * d, im->data + r * d, (size_t)d);
        out->y[i] = lb->data[r];
    }
    mdl_dataset_decode(out);
    return 0;
}

int mdl_mnist_load(const char *dir, const char *prefix, mdl_dataset *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    mdl_idx im, lb;
    if (load_pair(dir, prefix, &im, &lb, err, errlen)) return -1;
    int rc = convert(&im, &lb, NULL, im.dims[0], out) ? mdl_fail(err, errlen, "%s: out of memory", dir) : 0;
    mdl_idx_free(&im);
    mdl_idx_free(&lb);
    return rc;
}

void mdl_dataset_free(mdl_dataset *d) {
    free(d->X);
    free(d->y);
    free((void *)d->Xc.codes);
    free((void *)d->Xc.table);
    memset(d, 0, sizeof *d);
}

mdl_hc_params mdl_hc_default_params(void) {
    return (mdl_hc_params){.n_train = 5000, .n_val = 5000, .n_test = 10000, .corrupt = 0.5, .seed = 0};
}

int mdl_hc_load(const char *dir, const mdl_hc_params *p, mdl_hc_data *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (p->n_train < 1 || p->n_val < 1 || p->n_test < 1 || !(p->corrupt >= 0 && p->corrupt <= 1))
        return mdl_fail(err, errlen, "hyper-cleaning: bad split %d / %d / %d or corruption rate %g",
                    p->n_train, p->n_val, p->n_test, p->corrupt);
    mdl_idx im, lb, tim, tlb;
    if (load_pair(dir, "train", &im, &lb, err, errlen)) return -1;
    if (load_pair(dir, "t10k", &tim, &tlb, err, errlen)) {
        mdl_idx_free(&im), mdl_idx_free(&lb);
        return -1;
    }
    int rc = 0, n = im.dims[0];
    if (p->n_train + p->n_val > n)
        rc = mdl_fail(err, errlen, "%s: %d training images, fewer than %d + %d asked for", dir, n, p->n_train, p->n_val);
    else if (p->n_test > tim.dims[0])
        rc = mdl_fail(err, errlen, "%s: %d test images, fewer than %d asked for", dir, tim.dims[0], p->n_test);
    int32_t *perm = rc ? NULL : malloc((size_t)n * sizeof *perm);
    out->clean = rc ? NULL : malloc((size_t)p->n_train);
    if (!rc && (!perm || !out->clean)) rc = mdl_fail(err, errlen, "hyper-cleaning: out of memory");
    ad_rng g;
    ad_rng_seed(&g, p->seed);
    for (int i = 0; !rc && i < n; i++) perm[i] = i;
    for (int i = n - 1; !rc && i > 0; i--) { // Fisher-Yates: train and validation rows
        int j = (int)(ad_rng_next(&g) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    if (!rc && (convert(&im, &lb, perm, p->n_train, &out->train) ||
                convert(&im, &lb, perm + p->n_train, p->n_val, &out->val) ||
                convert(&tim, &tlb, NULL, p->n_test, &out->test)))
        rc = mdl_fail(err, errlen, "hyper-cleaning: out of memory");
    // corrupt exactly floor(rate n) labels, chosen without replacement, each to another class
    int n_bad = (int)(p->corrupt * p->n_train);
    for (int i = 0; !rc && i < p->n_train; i++) out->clean[i] = 1, perm[i] = i;
    for (int i = 0; !rc && i < n_bad; i++) {
        int j = i + (int)(ad_rng_next(&g) % (uint64_t)(p->n_train - i));
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
        int k = perm[i], c = out->train.classes;
        out->train.y[k] = (out->train.y[k] + 1 + (int32_t)(ad_rng_next(&g) % (uint64_t)(c - 1))) % c;
        out->clean[k] = 0;
    }
    free(perm);
    mdl_idx_free(&im), mdl_idx_free(&lb), mdl_idx_free(&tim), mdl_idx_free(&tlb);
    if (rc) mdl_hc_free(out);
    return rc;
}

void mdl_hc_free(mdl_hc_data *d) {
    mdl_dataset_free(&d->train);
    mdl_dataset_free(&d->val);
    mdl_dataset_free(&d->test);
    free(d->clean);
    memset(d, 0, sizeof *d);
}
