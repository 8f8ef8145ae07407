// The glyph set rendered from Debian's fonts (models/glyphs.c): its layout (classes after
// classes, each class's faces in order), codes against doubles, the homoglyph rule (Latin A kept,
// Greek Alpha and Cyrillic A left out; no two kept classes alike in half the faces), each glyph
// centred on its square and standing on the baseline, the same bits twice; bad font folders fail
// with one line naming the path and leave nothing loaded; `fewshot` on it (source=glyphs) checks
// ways against its split and evaluates on its meta-test and validation classes.
#include "harness.h"
#include "tests.h"

#include "../models/data.h"
#include "../models/models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { SIDE = 28, D = SIDE * SIDE };

static int class_of(const uint32_t *cp, int classes, uint32_t c) {
    for (int k = 0; k < classes; k++)
        if (cp[k] == c) return k;
    return -1;
}

// Rows and columns of ink (code >= lo) of one image: first and last of each.
static void ink_box(const uint8_t *img, int lo, int *r0, int *r1, int *c0, int *c1) {
    *r0 = *c0 = SIDE, *r1 = *c1 = -1;
    for (int i = 0; i < SIDE; i++)
        for (int j = 0; j < SIDE; j++)
            if (img[i * SIDE + j] >= lo) {
                if (i < *r0) *r0 = i;
                if (i > *r1) *r1 = i;
                if (j < *c0) *c0 = j;
                if (j > *c1) *c1 = j;
            }
}

static int by_int(const void *a, const void *b) {
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static void default_fonts(void) {
    mdl_dataset ds, again;
    uint32_t cp[256];
    int32_t faces = 0;
    char err[600];
    int rc = mdl_glyphs_load(MDL_GLYPH_FONTS, SIDE, &ds, cp, &faces, err, sizeof err);
    TEST_CASE("glyphs: the default fonts load") EXPECT(rc == 0, "load failed: %s", err);
    if (rc) return;
    TEST_CASE("glyphs: classes after classes, codes and doubles agree") {
        EXPECT(ds.classes >= 100 && faces >= 50 && ds.n == ds.classes * faces && ds.d == D,
               "%d classes, %d faces, %d images of %d pixels", ds.classes, faces, ds.n, ds.d);
        int bad = 0;
        for (int i = 0; i < ds.n; i++) {
            bad += ds.y[i] != i / faces;
            for (int j = 0; j < D; j++) bad += ds.X[(size_t)i * D + j] != ds.Xc.codes[(size_t)i * D + j] / 255.0;
        }
        EXPECT(bad == 0, "%d labels or pixels off", bad);
        EXPECT(ds.Xc.values == ds.X && ds.Xc.rows == ds.n && ds.Xc.cols == D, "Xc does not describe X");
    }
    TEST_CASE("glyphs: homoglyphs are left out, no two classes alike in half the faces") {
        EXPECT(class_of(cp, ds.classes, 'A') == 0 && class_of(cp, ds.classes, 0x391) < 0 &&
                   class_of(cp, ds.classes, 0x410) < 0 && class_of(cp, ds.classes, 0x393) > 0 &&
                   class_of(cp, ds.classes, 0x416) > 0,
               "A, Alpha, Cyrillic A, Gamma, Zhe: classes %d %d %d %d %d", class_of(cp, ds.classes, 'A'),
               class_of(cp, ds.classes, 0x391), class_of(cp, ds.classes, 0x410), class_of(cp, ds.classes, 0x393),
               class_of(cp, ds.classes, 0x416));
        int alike = 0;
        for (int a = 0; a < ds.classes; a++)
            for (int b = 0; b < a; b++) {
                int same = 0;
                for (int f = 0; f < faces; f++)
                    same += !memcmp(ds.Xc.codes + ((size_t)a * faces + f) * D, ds.Xc.codes + ((size_t)b * faces + f) * D, D);
                alike += 2 * same >= faces;
            }
        EXPECT(alike == 0, "%d pairs of classes are the same picture in half the faces", alike);
    }
    TEST_CASE("glyphs: centred, on the baseline (row 21), descenders below it") {
        // centred: the bitmap's columns are centred, so its nonzero columns' margins differ by at
        // most 2 (a column of zeros at an edge, and the odd pixel); on the baseline: the median
        // face's x ends on row 20 or 21 and its p below row 22 (a script face's x dips lower)
        int x = class_of(cp, ds.classes, 'x'), p = class_of(cp, ds.classes, 'p'), off = 0, empty = 0;
        int *bottom = calloc(2 * (size_t)faces, sizeof(int));
        for (int i = 0; bottom && i < ds.n; i++) {
            int r0, r1, c0, c1;
            ink_box(ds.Xc.codes + (size_t)i * D, 1, &r0, &r1, &c0, &c1);
            if (r1 < 0) {
                empty++;
                continue;
            }
            off += abs(c0 - (SIDE - 1 - c1)) > 2;
            if (ds.y[i] == x || ds.y[i] == p) {
                ink_box(ds.Xc.codes + (size_t)i * D, 128, &r0, &r1, &c0, &c1); // the dark part
                bottom[(ds.y[i] == p) * faces + i % faces] = r1;
            }
        }
        EXPECT(bottom && empty == 0 && off == 0, "%d images without ink, %d off centre", empty, off);
        if (bottom) {
            qsort(bottom, (size_t)faces, sizeof(int), by_int), qsort(bottom + faces, (size_t)faces, sizeof(int), by_int);
            int bx = bottom[faces / 2], bp = bottom[faces + faces / 2];
            EXPECT((bx == 20 || bx == 21) && bp >= 23, "median bottom rows: x %d, p %d", bx, bp);
        }
        free(bottom);
    }
    TEST_CASE("glyphs: the same bits twice") {
        rc = mdl_glyphs_load(MDL_GLYPH_FONTS, SIDE, &again, NULL, NULL, err, sizeof err);
        EXPECT(rc == 0 && again.n == ds.n && !memcmp(again.Xc.codes, ds.Xc.codes, (size_t)ds.n * D),
               "a second load differs (%s)", rc ? err : "codes");
        if (!rc) mdl_dataset_free(&again);
    }
    mdl_dataset_free(&ds);
}

// One bad font list: the load fails with a message holding `part` and `names`.
typedef struct {
    const char *name, *fonts, *part, *names;
} bad_case;

static void bad_fonts(const char *tmp) {
    char p[700], q[700];
    snprintf(p, sizeof p, "%s/empty", tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/corrupt", tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/corrupt/x.ttf", tmp);
    FILE *f = fopen(p, "w");
    if (f) fputs("not a font at all", f), fclose(f);
    snprintf(p, sizeof p, "%s/symbols", tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/symbols/d.otf", tmp);
    if (symlink("/usr/share/fonts/opentype/urw-base35/D050000L.otf", p)) fprintf(stderr, "symlink %s failed\n", p);
    const bad_case cases[] = {
        {"glyphs: a missing folder", "missing", "No such file", "missing"},
        {"glyphs: a folder with no font file", "empty", "no font files", "empty"},
        {"glyphs: a file FreeType cannot read", "corrupt", "not a font", "corrupt/x.ttf"},
        {"glyphs: no face with every character", "symbols", "has all", "symbols"},
        {"glyphs: an empty list", "", "no font folders", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        TEST_CASE(cases[i].name) {
            char err[900] = "";
            if (*cases[i].fonts) snprintf(p, sizeof p, "%s/%s", tmp, cases[i].fonts);
            else p[0] = 0;
            snprintf(q, sizeof q, "%s/%s", tmp, cases[i].names);
            mdl_dataset ds;
            int32_t faces = 7;
            int rc = mdl_glyphs_load(p, SIDE, &ds, NULL, &faces, err, sizeof err);
            EXPECT(rc == -1, "loaded");
            EXPECT(strstr(err, cases[i].part) && (!*cases[i].names || strstr(err, q)) && !strchr(err, '\n'),
                   "message '%s' should name %s and say '%s'", err, q, cases[i].part);
            EXPECT(!ds.X && !ds.y && !ds.Xc.codes && ds.n == 0 && faces == 0, "something left loaded");
        }
    TEST_CASE("glyphs: a bad side") {
        char err[300] = "";
        mdl_dataset ds;
        EXPECT(mdl_glyphs_load(MDL_GLYPH_FONTS, 4, &ds, NULL, NULL, err, sizeof err) == -1 && strstr(err, "side"),
               "side 4: '%s'", err);
    }
}

// fewshot with source=glyphs: ways beyond the validation split (14 classes) or FashionMNIST's
// meta-test split (4) fail; 5-way tasks of the untrained representation score well above chance
// (20%: 200 queries put 35% five standard errors above it; measured 52.5 and 48.5).
static void fewshot_glyphs(void) {
    TEST_CASE("glyphs: fewshot's ways must fit the glyph split, FashionMNIST's 4") {
        static const char *const bad[][2] = {{"source=glyphs ways=15", "validation"}, {"source=fashion ways=5", "4 classes"}};
        for (int i = 0; i < 2; i++) {
            mdl_model m;
            char err[400] = "";
            int rc = mdl_make_named("fewshot", bad[i][0], &m, err, sizeof err);
            EXPECT(rc == -1 && strstr(err, bad[i][1]) && !strchr(err, '\n'), "%s: rc %d, '%s'", bad[i][0], rc, err);
            if (!rc) mdl_free(&m);
        }
    }
    TEST_CASE("glyphs: fewshot evaluates 5-way tasks above chance") {
        mdl_model m;
        char err[400] = "";
        int rc = mdl_make_named("fewshot", "source=glyphs ways=5 shots=1 query=2 test_tasks=20 val_tasks=20 "
                                           "pretrain_iters=0 test_steps=2", &m, err, sizeof err);
        EXPECT(rc == 0, "make: %s", err);
        if (rc) continue;
        double out[MDL_METRICS_MAX];
        rc = m.evaluate_z(&m, m.x0[0], NULL, 0, out, err, sizeof err);
        EXPECT(rc == 0 && out[0] > 35 && out[0] <= 100 && out[2] > 35 && out[2] <= 100,
               "rc %d (%s), test %g, val %g", rc, err, out[0], out[2]);
        mdl_free(&m);
    }
}

void test_models_glyphs(void) {
    default_fonts();
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/hypertape-glyphs-XXXXXX");
    if (!mkdtemp(tmp)) {
        TEST_CASE("glyphs: a temporary folder") EXPECT(0, "mkdtemp failed");
        return;
    }
    bad_fonts(tmp);
    fewshot_glyphs();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
}
