// A libFuzzer target for the IDX reader (mdl_idx_read; built with -Dfuzz=true, run by tests/run).
// Each input is read twice: as it is (a raw file, or a damaged gzip stream when it starts with
// gzip's magic 1f 8b) and gzip-compressed by zlib, so that mutations of the uncompressed bytes
// also reach the gzip path with well-formed streams. The files are memfds read through
// /proc/self/fd (the reader takes a path), so a crash leaves no temporary file behind.
#define _GNU_SOURCE
#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t n);

// A new memfd holding the bytes, gzip-compressed when gz; -1 if the system refuses.
static int put(const uint8_t *bytes, size_t n, int gz) {
    int fd = memfd_create("idx", MFD_CLOEXEC);
    if (fd < 0) return -1;
    if (gz) {
        gzFile g = gzdopen(dup(fd), "wb");
        int ok = g && (n == 0 || gzwrite(g, bytes, (unsigned)n) == (int)n);
        if (!g || gzclose(g) != Z_OK || !ok) return close(fd), -1;
        return fd;
    }
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, bytes + done, n - done);
        if (w <= 0) return close(fd), -1;
        done += (size_t)w;
    }
    return fd;
}

// Reads the file: a success must have a consistent shape and readable data, a failure a message
// naming the file. Anything else is a finding (abort).
static void check(int fd) {
    char path[64], err[512] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    mdl_idx m;
    if (mdl_idx_read(path, &m, err, sizeof err) == 0) {
        size_t size = 1;
        for (int i = 0; i < m.ndim; i++) size *= m.dims[i] > 0 ? (size_t)m.dims[i] : 0;
        if (m.ndim < 1 || m.ndim > 4 || size != m.size || !m.data) abort();
        unsigned sum = 0; // every byte read once, for ASan
        for (size_t i = 0; i < m.size; i++) sum += m.data[i];
        if (sum > 255u * m.size) abort();
    } else if (!strstr(err, path) || m.data) {
        abort();
    }
    mdl_idx_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t n) {
    for (int gz = 0; gz < 2; gz++) {
        int fd = put(bytes, n, gz);
        if (fd < 0) continue;
        check(fd);
        close(fd);
    }
    return 0;
}
