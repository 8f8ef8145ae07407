// The Omniglot reader on a small tree written here with libpng: labels in the sorted order of
// alphabets and characters, 8-bit and 1-bit gray drawings, pixels against the area averages
// worked out by hand (2x2 blocks, and a 8 -> 3 case with fractional overlaps); bad trees and a
// truncated PNG fail with one line naming the path and leave nothing loaded.
#include "harness.h"
#include "tests.h"

#include "../models/data.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { W = 8 };

// Writes the gray image px [W, W] to path at bit depth 8 or 1 (px then 0 or 1 per pixel).
static int write_png(const char *path, const uint8_t *px, int depth) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    int rc = -1;
    if (info && !setjmp(png_jmpbuf(p))) {
        png_init_io(p, f);
        png_set_IHDR(p, info, W, W, depth, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(p, info);
        if (depth < 8) png_set_packing(p);
        for (int r = 0; r < W; r++) png_write_row(p, px + r * W);
        png_write_end(p, NULL);
        rc = 0;
    }
    png_destroy_write_struct(&p, &info);
    fclose(f);
    return rc;
}

// Drawing k of character c: 8-bit for even c (a ramp), 1-bit for odd c (a diagonal band).
static void drawing(int c, int k, uint8_t *px) {
    for (int r = 0; r < W; r++)
        for (int j = 0; j < W; j++)
            px[r * W + j] = c % 2 == 0 ? (uint8_t)(3 * (r * W + j) + 7 * k + 20 * c) : (uint8_t)((r + j + k) % 3 == 0);
}

static void path_join(char *buf, size_t n, const char *a, const char *b) {
    snprintf(buf, n, "%s/%s", a, b);
}

// root/ALPHABET/CHARACTER/k.png: alphabets and characters are created in reverse order, so only
// a sorted walk gives character c the label c.
static int make_tree(const char *root) {
    static const char *const alpha[2] = {"Alpha", "Beta"}, *const chars[2] = {"character01", "character02"};
    char a[512], c[600], f[700];
    if (mkdir(root, 0700)) return -1;
    for (int ai = 1; ai >= 0; ai--) {
        path_join(a, sizeof a, root, alpha[ai]);
        if (mkdir(a, 0700)) return -1;
        for (int ci = 1; ci >= 0; ci--) {
            path_join(c, sizeof c, a, chars[ci]);
            if (mkdir(c, 0700)) return -1;
            for (int k = 2; k >= 0; k--) {
                uint8_t px[W * W];
                drawing(2 * ai + ci, k, px);
                snprintf(f, sizeof f, "%s/%04d_%02d.png", c, 2 * ai + ci, k);
                if (write_png(f, px, (2 * ai + ci) % 2 ? 1 : 8)) return -1;
            }
        }
    }
    return 0;
}

static void good_tree(const char *tmp) {
    char root[300];
    snprintf(root, sizeof root, "%s/omniglot", tmp);
    TEST_CASE("omniglot: labels in sorted order, pixels the 2x2 area averages") {
        EXPECT(make_tree(root) == 0, "could not write the tree under %s", root);
        mdl_dataset ds;
        int32_t classes = -1;
        char err[600];
        int rc = mdl_omniglot_load(root, 4, &ds, &classes, err, sizeof err);
        EXPECT(rc == 0, "load failed: %s", err);
        if (rc) continue;
        EXPECT(ds.n == 12 && ds.d == 16 && ds.classes == 4 && classes == 4, "n %d d %d classes %d/%d", ds.n,
               ds.d, ds.classes, classes);
        double worst = 0;
        for (int i = 0; i < ds.n; i++) {
            int c = i / 3, k = i % 3;
            EXPECT(ds.y[i] == c, "row %d: label %d, expected %d", i, ds.y[i], c);
            uint8_t px[W * W];
            drawing(c, k, px);
            double scale = c % 2 ? 255 : 1; // a 1-bit pixel reads as 0 or 255
            for (int oi = 0; oi < 4; oi++)
                for (int oj = 0; oj < 4; oj++) {
                    const uint8_t *b = px + 2 * oi * W + 2 * oj;
                    double mean = scale * (b[0] + b[1] + b[W] + b[W + 1]) / 4.0;
                    double want = floor(mean + 0.5) / 255.0, got = ds.X[i * 16 + oi * 4 + oj];
                    worst = fmax(worst, fabs(got - want));
                    EXPECT(ds.Xc.codes[i * 16 + oi * 4 + oj] == (uint8_t)floor(mean + 0.5), "row %d: code", i);
                }
        }
        EXPECT(worst == 0, "pixels off the hand-computed averages by up to %g", worst);
        EXPECT(ds.Xc.values == ds.X && ds.Xc.rows == 12 && ds.Xc.cols == 16, "Xc does not describe X");
        mdl_dataset_free(&ds);
    }
    TEST_CASE("omniglot: 8 -> 3 pixels weighs the cells a side shares") {
        // columns 0-2 at 255, the rest 0: the middle output column covers [8/3, 16/3), of which
        // [8/3, 3) is at 255, so it reads 255 (1/3) / (8/3) = 31.875 -> 32; the others 255 and 0.
        char one[700];
        snprintf(one, sizeof one, "%s/Alpha/character01/0000_00.png", root);
        uint8_t px[W * W];
        for (int r = 0; r < W * W; r++) px[r] = r % W < 3 ? 255 : 0;
        EXPECT(write_png(one, px, 8) == 0, "could not write %s", one);
        mdl_dataset ds;
        char err[600];
        int rc = mdl_omniglot_load(root, 3, &ds, NULL, err, sizeof err);
        EXPECT(rc == 0, "load failed: %s", err);
        if (rc) continue;
        for (int j = 0; j < 9; j++) {
            double want = (j % 3 == 0 ? 255 : j % 3 == 1 ? 32 : 0) / 255.0;
            EXPECT(ds.X[j] == want, "pixel %d: %.17g, expected %.17g", j, ds.X[j], want);
        }
        mdl_dataset_free(&ds);
    }
}

// One bad tree: after setup(root), the load fails with a message holding `part` and the path.
typedef struct {
    const char *name, *sub, *part;
} bad_case;

static void bad_trees(const char *tmp) {
    static const bad_case cases[] = {
        {"omniglot: a missing root", "missing", "No such file"},
        {"omniglot: a root that is a file", "file", "Not a directory"},
        {"omniglot: an alphabet without characters", "noalpha/A", "no sub-folders"},
        {"omniglot: an empty character folder", "empty/A/c", "no PNG files"},
        {"omniglot: a truncated PNG", "trunc/A/c/x.png", "PNG"},
    };
    char p[700];
    snprintf(p, sizeof p, "%s/file", tmp);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
    const char *dirs[] = {"noalpha", "noalpha/A", "empty", "empty/A", "empty/A/c", "trunc", "trunc/A", "trunc/A/c"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, dirs[i]);
        mkdir(p, 0700);
    }
    uint8_t px[W * W] = {0};
    snprintf(p, sizeof p, "%s/trunc/A/c/x.png", tmp);
    write_png(p, px, 8);
    if (truncate(p, 40)) fprintf(stderr, "could not truncate %s\n", p);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        TEST_CASE(cases[i].name) {
            char root[400], want[700], err[700] = "";
            snprintf(root, sizeof root, "%s/%.*s", tmp, (int)strcspn(cases[i].sub, "/"), cases[i].sub);
            snprintf(want, sizeof want, "%s/%s", tmp, cases[i].sub);
            mdl_dataset ds;
            int32_t classes = 7;
            int rc = mdl_omniglot_load(root, 4, &ds, &classes, err, sizeof err);
            EXPECT(rc == -1, "loaded");
            EXPECT(strstr(err, cases[i].part) && strstr(err, want) && !strchr(err, '\n'),
                   "message '%s' should name %s and say '%s'", err, want, cases[i].part);
            EXPECT(!ds.X && !ds.y && !ds.Xc.codes && ds.n == 0 && classes == 0, "something left loaded");
        }
}

void test_models_omniglot(void) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/hypertape-omniglot-XXXXXX");
    if (!mkdtemp(tmp)) {
        TEST_CASE("omniglot: a temporary folder") EXPECT(0, "mkdtemp failed");
        return;
    }
    good_tree(tmp);
    bad_trees(tmp);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
}
