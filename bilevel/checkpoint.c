// A solver's state in a file, so a run stopped (by a signal, a deadline, a crash of the machine)
// resumes where it was and ends with the same bits as one that ran through. In the manner of
// llm.c's checkpoints: a magic number, a version, and the whole optimizer state.
//
// Layout (native byte order and doubles, for the same build on the same kind of machine):
//   "HTSOLVER" | u32 version | u32 0x01020304 (byte order) |
//   sections, each u64 length + bytes: meta (the caller's text), method name, settings
//   ("name=value" lines of every group but the run's length), body |
//   u32 CRC-32 (zlib) of everything before it.
// Body: i32 n_x, n_y, n_z, t | x [n_x], z [n_z], optimizer moments [2 (n_x + n_z)] |
//   generator [4 u64] | kbar sum (double), count (i64) | the method's bytes (section). The LL
// iterate of the last direction is not kept: the next direction writes it before anything reads it.
// The file is written to PATH.tmp and renamed over PATH, so a crash while writing leaves the
// previous state whole.
#include "solver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

enum { VERSION = 1, BYTE_ORDER_MARK = 0x01020304 };
static const char magic[8] = {'H', 'T', 'S', 'O', 'L', 'V', 'E', 'R'};

// ---- byte streams ------------------------------------------------------------------------------------

blo_status blo_write(blo_writer *w, const void *data, size_t n) {
    if (w->failed) return BLO_ENOMEM;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n) cap *= 2;
        unsigned char *p = realloc(w->data, cap);
        if (!p) {
            w->failed = true;
            return BLO_ENOMEM;
        }
        w->data = p, w->cap = cap;
    }
    if (n) memcpy(w->data + w->len, data, n);
    w->len += n;
    return BLO_OK;
}

blo_status blo_read(blo_reader *r, void *data, size_t n) {
    if (n > r->len - r->pos) return BLO_EIO;
    if (n) memcpy(data, r->data + r->pos, n);
    r->pos += n;
    return BLO_OK;
}

blo_status blo_write_doubles(blo_writer *w, const double *v, size_t n) {
    return blo_write(w, v, n * sizeof(double));
}

blo_status blo_read_doubles(blo_reader *r, double *v, size_t n) {
    return n > (r->len - r->pos) / sizeof(double) ? BLO_EIO : blo_read(r, v, n * sizeof(double));
}

static blo_status write_section(blo_writer *w, const void *data, size_t n) {
    uint64_t len = n;
    blo_status st = blo_write(w, &len, sizeof len);
    return st ? st : blo_write(w, data, n);
}

// A section of r as a reader of its own (not copied).
static blo_status read_section(blo_reader *r, blo_reader *sec) {
    uint64_t len;
    if (blo_read(r, &len, sizeof len) || len > r->len - r->pos) return BLO_EIO;
    *sec = (blo_reader){.data = r->data + r->pos, .len = (size_t)len};
    r->pos += (size_t)len;
    return BLO_OK;
}

// "name=value\n" for every setting of c but the run's length: what must agree for a state to load.
static blo_status settings_text(const blo_config *c, blo_writer *w) {
    blo_settings_group g[3];
    int n = blo_config_groups(c, g);
    char line[512], val[300];
    for (int i = 0; i < n; i++) {
        snprintf(line, sizeof line, "%s=%s\n", g[i].owner, g[i].name);
        blo_status st = blo_write(w, line, strlen(line));
        for (const blo_setting *r = g[i].table; !st && r && r->name; r++) {
            if (r->flags & BLO_SET_LENGTH) continue;
            snprintf(line, sizeof line, "%s=%s\n", r->name, blo_setting_format(r, g[i].params, val, sizeof val));
            st = blo_write(w, line, strlen(line));
        }
        if (st) return st;
    }
    return BLO_OK;
}

// ---- saving -----------------------------------------------------------------------------------------------

static blo_status body(const blo_solver *s, blo_writer *w) {
    int32_t sizes[4] = {s->nx, s->ny, s->nz, s->t};
    size_t n = (size_t)s->nx + (size_t)s->nz;
    blo_status st = blo_write(w, sizes, sizeof sizes);
    if (!st) st = blo_write_doubles(w, s->x, (size_t)s->nx);
    if (!st && s->nz) st = blo_write_doubles(w, s->z, (size_t)s->nz);
    if (!st) st = blo_write_doubles(w, s->mom, n);
    if (!st) st = blo_write_doubles(w, s->sec, n);
    if (!st) st = blo_write(w, s->rng.s, sizeof s->rng.s);
    if (!st) st = blo_write_doubles(w, &s->kbar_sum, 1);
    if (!st) st = blo_write(w, &s->kbar_n, sizeof s->kbar_n);
    blo_writer mw = {0};
    if (!st && s->m->save) st = s->m->save(s->state, &mw);
    if (!st) st = write_section(w, mw.data, mw.len);
    free(mw.data);
    return st;
}

// path.tmp (malloc'd; NULL when out of memory): the file a save writes before it renames it
// over path.
static char *tmp_path(const char *path) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (tmp) memcpy(tmp, path, plen), memcpy(tmp + plen, ".tmp", 5);
    return tmp;
}

static blo_status write_file(const char *path, const blo_writer *w, blo_error *err) {
    char *tmp = tmp_path(path);
    if (!tmp) return blo_fail(err, BLO_ENOMEM, "save: out of memory");
    FILE *f = fopen(tmp, "wb");
    blo_status st = BLO_OK;
    if (!f) st = blo_fail(err, BLO_EIO, "%s: cannot write: %s", tmp, strerror(errno));
    else {
        bool ok = fwrite(w->data, 1, w->len, f) == w->len;
        ok = fflush(f) == 0 && ok;
        ok = fclose(f) == 0 && ok;
        if (!ok) st = blo_fail(err, BLO_EIO, "%s: write failed: %s", tmp, strerror(errno));
        else if (rename(tmp, path)) st = blo_fail(err, BLO_EIO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        if (st) remove(tmp);
    }
    free(tmp);
    return st;
}

blo_status blo_solver_save_check(const char *path, blo_error *err) {
    if (!path || !*path) return blo_fail(err, BLO_EARG, "save: no path");
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return blo_fail(err, BLO_EARG, "%s is a directory", path);
    char *tmp = tmp_path(path);
    if (!tmp) return blo_fail(err, BLO_ENOMEM, "save: out of memory");
    FILE *f = fopen(tmp, "wb");
    blo_status st = f ? BLO_OK : blo_fail(err, BLO_EIO, "cannot write %s: %s", tmp, strerror(errno));
    if (f) fclose(f), remove(tmp);
    free(tmp);
    return st;
}

blo_status blo_solver_save(const blo_solver *s, const char *path, const char *meta, blo_error *err) {
    if (!s || !path) return blo_fail(err, BLO_EARG, "save: NULL solver or path");
    if (s->broken) return blo_fail(err, BLO_EARG, "save: the solver's state was partly loaded from a bad file");
    blo_writer w = {0}, set = {0}, b = {0};
    uint32_t head[2] = {VERSION, BYTE_ORDER_MARK};
    const char *name = s->m->name;
    blo_status st = blo_write(&w, magic, sizeof magic);
    if (!st) st = blo_write(&w, head, sizeof head);
    if (!st) st = write_section(&w, meta ? meta : "", meta ? strlen(meta) : 0);
    if (!st) st = write_section(&w, name, strlen(name));
    if (!st) st = settings_text(s->c, &set);
    if (!st) st = write_section(&w, set.data, set.len);
    if (!st) st = body(s, &b);
    if (!st) st = write_section(&w, b.data, b.len);
    uint32_t crc = st ? 0 : (uint32_t)crc32_z(0L, w.data, w.len);
    if (!st) st = blo_write(&w, &crc, sizeof crc);
    if (st) st = blo_fail(err, st, "save: out of memory");
    else st = write_file(path, &w, err);
    free(w.data), free(set.data), free(b.data);
    return st ? st : blo_ok(err);
}

// ---- loading -----------------------------------------------------------------------------------------------

typedef struct {
    unsigned char *data;
    blo_reader meta, name, settings, body;
} state_file;

// Reads and checks path (magic, version, byte order, checksum) and finds its sections.
static blo_status read_file(const char *path, state_file *sf, blo_error *err) {
    memset(sf, 0, sizeof *sf);
    FILE *f = fopen(path, "rb");
    if (!f) return blo_fail(err, BLO_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb; // a directory opens, and its "size" is LONG_MAX
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode))
        return fclose(f), blo_fail(err, BLO_EIO, "%s is a directory", path);
    long size = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
    blo_status st = BLO_OK;
    if (size < 0 || fseek(f, 0, SEEK_SET)) st = blo_fail(err, BLO_EIO, "%s: cannot read its size", path);
    else if (!(sf->data = malloc((size_t)size + 1))) st = blo_fail(err, BLO_ENOMEM, "%s: out of memory", path);
    else if (fread(sf->data, 1, (size_t)size, f) != (size_t)size) st = blo_fail(err, BLO_EIO, "%s: read failed", path);
    fclose(f);
    if (st) return st;
    size_t n = (size_t)size, fixed = sizeof magic + 2 * sizeof(uint32_t);
    uint32_t head[2] = {0, 0}, crc;
    if (n < fixed + sizeof crc || memcmp(sf->data, magic, sizeof magic))
        return blo_fail(err, BLO_EIO, "%s: not a hypertape solver state", path);
    memcpy(head, sf->data + sizeof magic, sizeof head);
    if (head[1] != BYTE_ORDER_MARK)
        return blo_fail(err, BLO_EIO, "%s: saved on a machine of the other byte order", path);
    if (head[0] != VERSION)
        return blo_fail(err, BLO_EIO, "%s: a state of version %u; this build reads version %d", path, head[0], VERSION);
    memcpy(&crc, sf->data + n - sizeof crc, sizeof crc);
    if ((uint32_t)crc32_z(0L, sf->data, n - sizeof crc) != crc)
        return blo_fail(err, BLO_EIO, "%s: damaged (its checksum does not match)", path);
    blo_reader r = {.data = sf->data, .len = n - sizeof crc, .pos = fixed};
    if (read_section(&r, &sf->meta) || read_section(&r, &sf->name) || read_section(&r, &sf->settings) ||
        read_section(&r, &sf->body) || r.pos != r.len)
        return blo_fail(err, BLO_EIO, "%s: its sections do not add up", path);
    return BLO_OK;
}

blo_status blo_solver_read_meta(const char *path, char **meta, blo_error *err) {
    if (!path || !meta) return blo_fail(err, BLO_EARG, "read_meta: NULL argument");
    *meta = NULL;
    state_file sf;
    blo_status st = read_file(path, &sf, err);
    if (!st && !(*meta = malloc(sf.meta.len + 1))) st = blo_fail(err, BLO_ENOMEM, "%s: out of memory", path);
    if (!st) {
        memcpy(*meta, sf.meta.data, sf.meta.len);
        (*meta)[sf.meta.len] = 0;
    }
    free(sf.data);
    return st ? st : blo_ok(err);
}

// The first line where two settings texts differ, as a message.
static blo_status compare_settings(const char *path, const blo_reader *saved, const blo_writer *ours,
                                   blo_error *err) {
    const char *a = (const char *)saved->data, *b = (const char *)ours->data;
    size_t na = saved->len, nb = ours->len, i = 0, line = 0;
    while (i < na && i < nb && a[i] == b[i]) {
        if (a[i] == '\n') line = i + 1;
        i++;
    }
    if (i == na && i == nb) return BLO_OK;
    size_t ea = line, eb = line;
    while (ea < na && a[ea] != '\n') ea++;
    while (eb < nb && b[eb] != '\n') eb++;
    return blo_fail(err, BLO_EARG, "%s: saved with %.*s, this run has %.*s", path, (int)(ea - line),
                    a + line, (int)(eb - line), b + line);
}

// The solver's vectors of a state [x | z | moments | moments | kbar sum], read and checked
// before anything of the solver changes.
typedef struct {
    double *v;
    int32_t t;
    ad_rng rng;
    int64_t kbar_n;
    blo_reader method;
} staged;

static blo_status stage_body(const blo_solver *s, blo_reader *r, const char *path, staged *b, blo_error *err) {
    int32_t sizes[4];
    if (blo_read(r, sizes, sizeof sizes)) return blo_fail(err, BLO_EIO, "%s: the state is truncated", path);
    if (sizes[0] != s->nx || sizes[1] != s->ny || sizes[2] != s->nz)
        return blo_fail(err, BLO_EARG, "%s: saved for n_x = %d, n_y = %d, n_z = %d; this run has %d, %d, %d",
                        path, sizes[0], sizes[1], sizes[2], s->nx, s->ny, s->nz);
    if (sizes[3] < 0 || sizes[3] == INT32_MAX) // a step from it could not count itself
        return blo_fail(err, BLO_EIO, "%s: an iteration count of %d", path, sizes[3]);
    size_t nxz = (size_t)s->nx + (size_t)s->nz, total = 3 * nxz + 1;
    if (!(b->v = malloc(sizeof(double) * total))) return blo_fail(err, BLO_ENOMEM, "%s: out of memory", path);
    double *kbar = b->v + 3 * nxz;
    if (blo_read_doubles(r, b->v, nxz) || blo_read_doubles(r, b->v + nxz, 2 * nxz) ||
        blo_read(r, b->rng.s, sizeof b->rng.s) || blo_read_doubles(r, kbar, 1) ||
        blo_read(r, &b->kbar_n, sizeof b->kbar_n) ||
        read_section(r, &b->method) || r->pos != r->len)
        return blo_fail(err, BLO_EIO, "%s: the state is truncated", path);
    for (size_t i = 0; i < 3 * nxz; i++) // the iterate and its moments: what the next step reads
        if (!isfinite(b->v[i])) return blo_fail(err, BLO_EIO, "%s: a non-finite iterate or moment", path);
    if (!s->m->load && b->method.len)
        return blo_fail(err, BLO_EIO, "%s: method %s carries no state but the file has some", path, s->m->name);
    b->t = sizes[3];
    return BLO_OK;
}

// The method's state, then (it loaded whole) the staged vectors. A method that fails half way
// leaves the solver marked broken: its state is not one to go on from or to save.
static blo_status commit_body(blo_solver *s, staged *b, const char *path, blo_error *err) {
    if (s->m->load) {
        s->broken = true;
        blo_status st = s->m->load(s->state, &b->method, err);
        if (st) return st;
        if (b->method.pos != b->method.len) return blo_fail(err, BLO_EIO, "%s: the method's state has extra bytes", path);
    }
    size_t nx = (size_t)s->nx, nz = (size_t)s->nz, nxz = nx + nz;
    memcpy(s->x, b->v, nx * sizeof(double));
    if (nz) memcpy(s->z, b->v + nx, nz * sizeof(double));
    memcpy(s->mom, b->v + nxz, nxz * sizeof(double));
    memcpy(s->sec, b->v + 2 * nxz, nxz * sizeof(double));
    s->kbar_sum = b->v[3 * nxz];
    s->t = b->t, s->rng = b->rng, s->kbar_n = b->kbar_n;
    s->broken = false;
    return BLO_OK;
}

blo_status blo_solver_load(blo_solver *s, const char *path, blo_error *err) {
    if (!s || !path) return blo_fail(err, BLO_EARG, "load: NULL solver or path");
    state_file sf;
    blo_writer ours = {0};
    blo_status st = read_file(path, &sf, err);
    const char *name = s->m->name;
    if (!st && (sf.name.len != strlen(name) || memcmp(sf.name.data, name, sf.name.len)))
        st = blo_fail(err, BLO_EARG, "%s: saved by method %.*s, this run is %s", path, (int)sf.name.len,
                      (const char *)sf.name.data, name);
    if (!st && settings_text(s->c, &ours)) st = blo_fail(err, BLO_ENOMEM, "load: out of memory");
    if (!st) st = compare_settings(path, &sf.settings, &ours, err);
    staged b = {0};
    if (!st) st = stage_body(s, &sf.body, path, &b, err);
    if (!st) st = commit_body(s, &b, path, err);
    free(b.v), free(sf.data), free(ours.data);
    if (st) snprintf(s->error, sizeof s->error, "%s", err ? err->msg : "load failed");
    return st ? st : blo_ok(err);
}
