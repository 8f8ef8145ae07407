// The IDX reader on good and damaged files (raw and gzip), on files claiming far more than they
// hold, and on the fuzz seed corpus; the MNIST pair checks; and the hyper-cleaning split on the
// installed FashionMNIST.
#include "harness.h"
#include "tests.h"

#include "../models/data.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[256];

// Writes bytes to tmpdir/name, gzip-compressed when gz.
static const char *put(const char *name, const uint8_t *b, size_t n, int gz) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        gzwrite(f, b, (unsigned)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(b, 1, n, f);
        fclose(f);
    }
    return path;
}

// An IDX header for unsigned bytes with the given dimensions, followed by size bytes 0, 1, 2...
static size_t make_idx(uint8_t *buf, int ndim, const int *dims, size_t data_bytes) {
    size_t k = 0;
    buf[k++] = 0, buf[k++] = 0, buf[k++] = 0x08, buf[k++] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[k++] = (uint8_t)(dims[i] >> 24), buf[k++] = (uint8_t)(dims[i] >> 16);
        buf[k++] = (uint8_t)(dims[i] >> 8), buf[k++] = (uint8_t)dims[i];
    }
    for (size_t i = 0; i < data_bytes; i++) buf[k++] = (uint8_t)(i % 10);
    return k;
}

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void idx_cases(void) {
    uint8_t buf[256];
    int dims[3] = {2, 3, 4};
    char err[512];
    mdl_idx m;
    TEST_CASE("idx: a raw and a gzip file read the same") {
        size_t n = make_idx(buf, 3, dims, 24);
        for (int gz = 0; gz < 2; gz++) {
            const char *p = put(gz ? "ok.gz" : "ok", buf, n, gz);
            EXPECT(mdl_idx_read(p, &m, err, sizeof err) == 0, "%s", err);
            EXPECT(m.ndim == 3 && m.dims[0] == 2 && m.dims[2] == 4 && m.size == 24, "shape");
            EXPECT(m.data && m.data[23] == 3, "data");
            mdl_idx_free(&m);
        }
    }
    struct { const char *what, *name, *msg; size_t cut; int gz; int damage; } bad[] = {
        {"missing file", "none", "cannot open", 0, 0, -1},
        {"truncated data", "trunc", "truncated: 24 bytes of data expected, 20 in the file", 4, 0, 0},
        {"truncated data (gzip)", "trunc.gz", "truncated", 4, 1, 0},
        {"truncated header", "head", "truncated in the dimension list", 30, 0, 0},
        {"bad magic", "magic", "not an IDX file", 0, 0, 1},
        {"float data", "float", "is not unsigned bytes", 0, 0, 2},
        {"extra bytes", "extra", "unexpected extra bytes", 0, 0, 3},
        {"damaged gzip stream", "broken.gz", "corrupt compressed data", 0, 2, 4},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "idx: %s is an error naming the path", bad[i].what);
        TEST_CASE(name) {
            size_t n = make_idx(buf, 3, dims, 24);
            if (bad[i].damage == 1) buf[0] = 0x1f;
            if (bad[i].damage == 2) buf[2] = 0x0d;
            if (bad[i].damage == 3) buf[n++] = 7;
            const char *p;
            if (bad[i].damage == -1) {
                static char missing[512];
                snprintf(missing, sizeof missing, "%s/none", tmpdir);
                p = missing;
            } else if (bad[i].damage == 4) {
                // compress a larger file and flip bytes in the middle of the deflate stream
                uint8_t big[4096 + 16];
                int d2[1] = {4096};
                size_t nb = make_idx(big, 1, d2, 4096);
                for (size_t k = 8; k < nb; k++) big[k] = (uint8_t)(k * 2654435761u >> 13);
                p = put(bad[i].name, big, nb, 1);
                FILE *f = fopen(p, "r+b");
                fseek(f, 0, SEEK_END);
                long len = ftell(f);
                fseek(f, len / 2, SEEK_SET);
                uint8_t junk[8] = {0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x55, 0xaa};
                fwrite(junk, 1, sizeof junk, f);
                fclose(f);
            } else {
                p = put(bad[i].name, buf, n - bad[i].cut, bad[i].gz);
            }
            int rc = mdl_idx_read(p, &m, err, sizeof err);
            EXPECT(rc == -1 && has(err, bad[i].msg) && has(err, p), "rc %d, message: %s", rc, err);
            EXPECT(m.data == NULL, "nothing loaded");
        }
    }
    TEST_CASE("mnist pair: image and label counts must agree, labels must be digits") {
        int d3[3] = {3, 2, 2}, d1[1] = {4};
        put("x-images-idx3-ubyte", buf, make_idx(buf, 3, d3, 12), 0);
        put("x-labels-idx1-ubyte.gz", buf, make_idx(buf, 1, d1, 4), 1);
        mdl_dataset ds;
        EXPECT(mdl_mnist_load(tmpdir, "x", &ds, err, sizeof err) == -1 && has(err, "3 images") &&
                   has(err, "4 labels"),
               "%s", err);
        d1[0] = 3;
        size_t n = make_idx(buf, 1, d1, 3);
        buf[n - 1] = 12;
        put("x-labels-idx1-ubyte.gz", buf, n, 1);
        EXPECT(mdl_mnist_load(tmpdir, "x", &ds, err, sizeof err) == -1 && has(err, "label 2 is 12"),
               "%s", err);
        buf[n - 1] = 9;
        put("x-labels-idx1-ubyte.gz", buf, n, 1);
        EXPECT(mdl_mnist_load(tmpdir, "x", &ds, err, sizeof err) == 0 && ds.n == 3 && ds.d == 4 &&
                   ds.y[2] == 9 && ds.X[5] == 5 / 255.0,
               "%s", err);
        mdl_dataset_free(&ds);
    }
}

// Reads path in a child whose address space may grow by at most `room` bytes beyond what it holds
// at the fork (RLIMIT_AS; the ASan runtime's reservations are already in the count). Returns the
// child's exit status (0: the read failed with a message containing want; 1: another message; 2:
// the read succeeded; 128 + signal: it crashed) and the message in msg.
static int read_bounded(const char *path, size_t room, const char *want, char *msg, size_t n) {
    int fds[2];
    if (pipe(fds)) return snprintf(msg, n, "pipe failed"), -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        unsigned long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%lu", &pages) != 1) _exit(3);
        fclose(f);
        rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + room;
        if (setrlimit(RLIMIT_AS, &(struct rlimit){cap, cap})) _exit(3);
        char err[512] = "";
        mdl_idx m;
        int rc = mdl_idx_read(path, &m, err, sizeof err);
        if (write(fds[1], err, strlen(err)) < 0) _exit(3);
        mdl_idx_free(&m);
        _exit(rc == 0 ? 2 : has(err, want) ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = pid < 0 ? 0 : read(fds[0], msg, n - 1);
    msg[got > 0 ? got : 0] = 0;
    close(fds[0]);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return snprintf(msg, n, "fork failed"), -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Files whose header claims far more than they hold: the reader must find the truncation
// without first allocating the claimed size. Each read runs with 64 MiB of address space to
// spare, against a claim of 16 GiB.
static void idx_bounded(void) {
    struct { const char *what, *name, *msg; int gz; size_t data; } cases[] = {
        {"a 16-byte raw file claiming 16 GiB", "claim16g", "truncated: 17179869184 bytes of data expected, 0 in the file", 0, 0},
        {"a gzip header claiming 16 GiB", "claim16g.gz", "truncated: 17179869184 bytes of data expected, 0 found", 1, 0},
        {"a gzip file of 4 MiB claiming 16 GiB", "claim16g4m.gz", "truncated: 17179869184 bytes of data expected, 4194304 found", 1, 4 << 20},
    };
    int dims[3] = {65536, 65536, 4};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "idx: %s is truncated, found within 64 MiB", cases[i].what);
        TEST_CASE(name) {
            uint8_t *buf = calloc(16 + cases[i].data, 1);
            size_t n = make_idx(buf, 3, dims, 0) + cases[i].data;
            const char *p = put(cases[i].name, buf, n, cases[i].gz);
            free(buf);
            char msg[512];
            int st = read_bounded(p, (size_t)64 << 20, cases[i].msg, msg, sizeof msg);
            EXPECT(st == 0, "child status %d, message: %s", st, msg);
        }
    }
}

// One seed of the fuzz corpus, read as its name says: ok-AxBxC[.gz] loads with those dims and
// data bytes i % 251 (tests/fuzz/make_seeds.py), err-WORD-... fails with a message containing
// WORD and the path. Returns 1 for an ok- seed.
static int check_seed(const char *name) {
    char path[1024], err[512] = "", word[64] = "";
    snprintf(path, sizeof path, "%s/%s", HYPERTAPE_FUZZ_SEEDS, name);
    mdl_idx m;
    int rc = mdl_idx_read(path, &m, err, sizeof err);
    if (strncmp(name, "ok-", 3)) {
        sscanf(name, "err-%63[^-.]", word);
        EXPECT(rc == -1 && word[0] && has(err, word) && has(err, path) && !m.data,
               "%s: rc %d, message: %s", name, rc, err);
        mdl_idx_free(&m);
        return 0;
    }
    EXPECT(rc == 0, "%s: %s", name, err);
    const char *c = name + 3;
    int ndim = 0;
    size_t size = 1;
    for (char *end; ndim < 4 && *c >= '0' && *c <= '9'; c = end + (*end == 'x'), ndim++) {
        long d = strtol(c, &end, 10);
        EXPECT(rc || m.dims[ndim] == d, "%s: dimension %d is %d", name, ndim, rc ? 0 : m.dims[ndim]);
        size *= (size_t)d;
    }
    EXPECT(rc || (m.ndim == ndim && m.size == size), "%s: %d dims, %zu bytes", name, m.ndim, m.size);
    for (size_t i = 0; !rc && i < m.size; i++)
        if (m.data[i] != i % 251) {
            EXPECT(0, "%s: byte %zu is %d", name, i, m.data[i]);
            break;
        }
    mdl_idx_free(&m);
    return 1;
}

// The fuzz target's seed corpus (tests/fuzz/seeds), replayed on every build: never a crash, and
// each file loads or fails as its name says.
static void idx_seeds(void) {
    TEST_CASE("idx: the fuzz seed corpus loads or fails as the file names say") {
        DIR *dir = opendir(HYPERTAPE_FUZZ_SEEDS);
        EXPECT(dir, "cannot open %s", HYPERTAPE_FUZZ_SEEDS);
        int files = 0, ok = 0;
        for (struct dirent *e; dir && (e = readdir(dir));)
            if (e->d_name[0] != '.') files++, ok += check_seed(e->d_name);
        if (dir) closedir(dir);
        EXPECT(files >= 12 && ok >= 4 && files - ok >= 8, "%d seeds, %d of them ok-", files, ok);
    }
}

static void fashion(void) {
    TEST_CASE("hyper-cleaning split of FashionMNIST: sizes, exact corruption, reproducible") {
        char err[512];
        mdl_hc_params p = mdl_hc_default_params();
        p.seed = 3;
        mdl_hc_data a, b;
        int rc = mdl_hc_load(MDL_FASHION_MNIST_DIR, &p, &a, err, sizeof err);
        EXPECT(rc == 0, "%s (the README's first command installs dataset-fashion-mnist)", err);
        if (rc == 0) {
            EXPECT(a.train.n == 5000 && a.val.n == 5000 && a.test.n == 10000 && a.train.d == 784,
                   "sizes");
            int clean = 0;
            for (int i = 0; i < a.train.n; i++) clean += a.clean[i];
            EXPECT(clean == 2500, "%d clean labels", clean);
            double lo = 1, hi = 0;
            for (size_t i = 0; i < (size_t)a.test.n * a.test.d; i++)
                lo = a.test.X[i] < lo ? a.test.X[i] : lo, hi = a.test.X[i] > hi ? a.test.X[i] : hi;
            EXPECT(lo == 0 && hi == 1, "pixels in [0, 1]: %g %g", lo, hi);
            EXPECT(mdl_hc_load(MDL_FASHION_MNIST_DIR, &p, &b, err, sizeof err) == 0, "%s", err);
            EXPECT(!memcmp(a.train.y, b.train.y, 5000 * sizeof(int32_t)) &&
                       !memcmp(a.val.X, b.val.X, 784 * sizeof(double)),
                   "same seed, same split");
            mdl_hc_free(&b);
            p.seed = 4;
            EXPECT(mdl_hc_load(MDL_FASHION_MNIST_DIR, &p, &b, err, sizeof err) == 0 &&
                       memcmp(a.train.y, b.train.y, 5000 * sizeof(int32_t)),
                   "another seed, another split");
            mdl_hc_free(&b);
            mdl_hc_free(&a);
        }
        p.n_train = 59000;
        EXPECT(mdl_hc_load(MDL_FASHION_MNIST_DIR, &p, &a, err, sizeof err) == -1 && has(err, "fewer"),
               "%s", err);
        EXPECT(mdl_hc_load("/nonexistent", &p, &a, err, sizeof err) == -1 && has(err, "/nonexistent"),
               "%s", err);
    }
}

void test_models_data(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/hypertape-test-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        TEST_CASE("idx: a temporary folder") EXPECT(0, "mkdtemp failed");
        return;
    }
    idx_cases();
    idx_bounded();
    idx_seeds();
    fashion();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
}
