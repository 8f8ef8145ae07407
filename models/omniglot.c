// The Omniglot reader: ROOT/ALPHABET/CHARACTER/*.png (105x105 gray drawings, 20 a character)
// into an mdl_dataset whose label is the character's index over all alphabets. Folders and files
// are taken in strcmp order (not readdir's), so the same tree gives the same dataset everywhere.
// libpng's simplified API decodes any PNG (1-bit, 8-bit, 16-bit, palette, colour) to 8-bit gray
// and reports its errors as a message, never by aborting.
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char **v;
    int n, cap;
} names;

static void names_free(names *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    *s = (names){0};
}

static int names_push(names *s, const char *a, const char *b) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        s->v = v, s->cap = cap;
    }
    size_t len = strlen(a) + strlen(b) + 2;
    if (!(s->v[s->n] = malloc(len))) return -1;
    snprintf(s->v[s->n++], len, "%s%s%s", a, *a ? "/" : "", b);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_png(const char *name) {
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".png") == 0;
}

// The full paths of dir's sub-folders (want_dirs) or of its regular *.png files, sorted;
// hidden entries are skipped. An empty listing is an error naming dir and what was missing.
static int list_dir(const char *dir, int want_dirs, names *out, char *err, size_t errlen) {
    *out = (names){0};
    DIR *d = opendir(dir);
    if (!d) return mdl_fail(err, errlen, "%s: %s", dir, strerror(errno));
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        if (e->d_name[0] == '.' || (!want_dirs && !is_png(e->d_name))) continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(len);
        if (!path) {
            rc = mdl_fail(err, errlen, "%s: out of memory", dir);
            break;
        }
        snprintf(path, len, "%s/%s", dir, e->d_name);
        struct stat st;
        int keep = stat(path, &st) == 0 && (want_dirs ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
        free(path);
        if (keep && names_push(out, dir, e->d_name)) rc = mdl_fail(err, errlen, "%s: out of memory", dir);
    }
    closedir(d);
    if (!rc && out->n == 0)
        rc = mdl_fail(err, errlen, "%s: no %s", dir, want_dirs ? "sub-folders (alphabets or characters)" : "PNG files");
    if (rc) names_free(out);
    else qsort(out->v, (size_t)out->n, sizeof *out->v, by_name);
    return rc;
}

// Every drawing's path and its character's index, alphabets then characters then files in order.
static int list_tree(const char *root, names *files, int32_t **labels, int32_t *classes, char *err,
                     size_t errlen) {
    names alpha, chars, pngs;
    *files = (names){0}, *labels = NULL, *classes = 0;
    if (list_dir(root, 1, &alpha, err, errlen)) return -1;
    int rc = 0, cap = 0;
    for (int a = 0; !rc && a < alpha.n; a++) {
        if (list_dir(alpha.v[a], 1, &chars, err, errlen)) rc = -1;
        for (int c = 0; !rc && c < chars.n; c++, ++*classes) {
            if (list_dir(chars.v[c], 0, &pngs, err, errlen)) rc = -1;
            for (int i = 0; !rc && i < pngs.n; i++) {
                if (files->n == cap) {
                    cap = cap ? 2 * cap : 256;
                    int32_t *l = realloc(*labels, (size_t)cap * sizeof *l);
                    if (!l) rc = mdl_fail(err, errlen, "%s: out of memory", root);
                    else *labels = l;
                }
                if (!rc && names_push(files, "", pngs.v[i])) rc = mdl_fail(err, errlen, "%s: out of memory", root);
                if (!rc) (*labels)[files->n - 1] = *classes;
            }
            names_free(&pngs);
        }
        names_free(&chars);
    }
    names_free(&alpha);
    if (rc) names_free(files), free(*labels), *labels = NULL;
    return rc;
}

// The weight of source cell k in output cell o when n cells are averaged into m: the length of
// [k, k+1) ∩ [o n/m, (o+1) n/m), in source cells.
static double overlap(int k, int o, int n, int m) {
    double lo = fmax(k, (double)o * n / m), hi = fmin(k + 1, (double)(o + 1) * n / m);
    return hi > lo ? hi - lo : 0;
}

// Area averaging of the gray image g [h, w] (bytes) into side x side bytes, each the mean of
// the source area it covers rounded to the nearest byte (so that Xc's table holds X exactly).
static void resize_area(const uint8_t *g, int h, int w, int side, uint8_t *out) {
    double area = ((double)h / side) * ((double)w / side);
    for (int oi = 0; oi < side; oi++)
        for (int oj = 0; oj < side; oj++) {
            double s = 0;
            int r0 = (int)((long long)oi * h / side), r1 = (int)((long long)(oi + 1) * h / side);
            int c0 = (int)((long long)oj * w / side), c1 = (int)((long long)(oj + 1) * w / side);
            for (int r = r0; r < h && r <= r1; r++) {
                double wr = overlap(r, oi, h, side);
                for (int c = c0; wr > 0 && c < w && c <= c1; c++)
                    s += wr * overlap(c, oj, w, side) * g[(size_t)r * w + c];
            }
            double v = floor(s / area + 0.5);
            out[oi * side + oj] = (uint8_t)(v > 255 ? 255 : v);
        }
}

// Decodes path to 8-bit gray and resizes it into out [side * side].
static int read_png(const char *path, int side, uint8_t *out, char *err, size_t errlen) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path))
        return mdl_fail(err, errlen, "%s: not a readable PNG: %s", path, im.message);
    im.format = PNG_FORMAT_GRAY;
    uint8_t *g = malloc(PNG_IMAGE_SIZE(im) + 1);
    if (!g) {
        png_image_free(&im);
        return mdl_fail(err, errlen, "%s: out of memory for %ux%u pixels", path, im.width, im.height);
    }
    int ok = png_image_finish_read(&im, NULL, g, 0, NULL);
    if (ok) resize_area(g, (int)im.height, (int)im.width, side, out);
    else mdl_fail(err, errlen, "%s: corrupt PNG: %s", path, im.message);
    png_image_free(&im);
    free(g);
    return ok ? 0 : -1;
}

int mdl_omniglot_load(const char *root, int side, mdl_dataset *out, int32_t *n_classes_out, char *err,
                      size_t errlen) {
    memset(out, 0, sizeof *out);
    if (n_classes_out) *n_classes_out = 0;
    if (side < 1 || side > 4096) return mdl_fail(err, errlen, "%s: bad image side %d (1 to 4096)", root, side);
    names files;
    int32_t *labels, classes;
    if (list_tree(root, &files, &labels, &classes, err, errlen)) return -1;
    int n = files.n, d = side * side;
    uint8_t *codes = malloc((size_t)n * d + 1);
    double *table = malloc(256 * sizeof(double)), *X = malloc((size_t)n * d * sizeof(double) + 1);
    *out = (mdl_dataset){.n = n, .d = d, .classes = classes, .X = X, .y = labels, .Xc = {n, d, codes, table, X, NULL}};
    int rc = !codes || !table || !X ? mdl_fail(err, errlen, "%s: out of memory for %d images", root, n) : 0;
    for (int p = 0; !rc && p < 256; p++) table[p] = p / 255.0;
    for (int i = 0; !rc && i < n; i++) {
        uint8_t *row = codes + (size_t)i * d;
        rc = read_png(files.v[i], side, row, err, errlen);
        for (int j = 0; !rc && j < d; j++) X[(size_t)i * d + j] = table[row[j]];
    }
    names_free(&files);
    if (rc) mdl_dataset_free(out);
    else if (n_classes_out) *n_classes_out = classes;
    return rc;
}
