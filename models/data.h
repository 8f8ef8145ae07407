// Datasets: an IDX reader (the MNIST file format, raw or gzip through zlib) and the
// hyper-cleaning split of an MNIST-format folder (FashionMNIST by default), and an Omniglot reader
// (PNG folders through libpng: models/omniglot.c) and a many-class set rendered from
// fonts through FreeType (models/glyphs.c). Every failure is a
// clear message with the path and what was wrong; nothing is ever partly loaded.
#ifndef HYPERTAPE_MODELS_DATA_H
#define HYPERTAPE_MODELS_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "ad.h"

#ifdef __cplusplus
extern "C" {
#endif

// Where Debian's dataset-fashion-mnist package installs FashionMNIST.
#define MDL_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

// Writes a one-line message (printf-style) into err [n] and returns -1: how every models call
// reports a failure.
int mdl_fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// One Adam step (0.9, 0.999, 1e-8) of w [n] along g [n] with moments m1, m2 [n]: c1 and c2 are the
// bias corrections 1 - 0.9^t and 1 - 0.999^t of step t, computed by the caller (the models' own
// training loops: baselines and retraining, outside the solver).
void mdl_adam_step(double *w, const double *g, double *m1, double *m2, size_t n, double lr, double c1,
                   double c2);

// An IDX file of unsigned bytes (type 0x08), 1 to 4 dimensions.
typedef struct {
    int ndim;
    int32_t dims[4];
    size_t size;      // product of dims
    uint8_t *data;    // size bytes
} mdl_idx;

// Reads path (gzip or raw: zlib tells them apart). Returns 0, or -1 with a one-line message in
// err ("PATH: truncated: 47040016 bytes of data expected, 1000 in the file"; "..., 1000 found"
// for gzip). The size the header claims is not allocated on trust: a raw file is checked against
// its length first, a gzip file's buffer grows as its data arrives (at most twice what it holds).
int mdl_idx_read(const char *path, mdl_idx *out, char *err, size_t errlen);
void mdl_idx_free(mdl_idx *m);

// An image-classification set: n images of d pixels scaled to [0, 1], labels in [0, classes).
// The pixels are kept twice: as doubles, and as the file's bytes with the table of their
// doubles (Xc, for ad_matmul_coded: the same values in 1/8 of the memory, which is what the
// thin kernel's products read; the wide ones read the doubles, Xc.values = X).
typedef struct {
    int n, d, classes;
    double *X;       // [n, d]
    int32_t *y;      // [n]
    ad_coded Xc;     // [n, d]: Xc.table[p] = p / 255.0, the entries of X exactly
} mdl_dataset;

// Loads PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz] from dir (prefix "train"
// or "t10k"), checking that counts agree and labels are < 10.
int mdl_mnist_load(const char *dir, const char *prefix, mdl_dataset *out, char *err, size_t errlen);
void mdl_dataset_free(mdl_dataset *d);

// A set of n images of d pixels and the given number of classes, its table p / 255 filled, its
// codes, X and labels (zeros) for the caller to fill: 0, or -1 (out of memory, nothing kept).
int mdl_dataset_alloc(mdl_dataset *out, int n, int d, int classes);
// X from the codes, every entry (once the caller has written the codes).
void mdl_dataset_decode(mdl_dataset *ds);

// Omniglot's layout, ROOT/ALPHABET/CHARACTER/*.png (models/omniglot.c): every drawing, decoded by
// libpng to gray (white background 1, strokes 0: not inverted) and area-averaged to side x side
// (28 in MAML's Sec. 5.2), each pixel rounded to the nearest k/255 so that Xc holds X exactly.
// y is the character's index over all alphabets; folders and files are taken in strcmp order.
// *n_classes_out (may be NULL) = out->classes, the number of characters. A missing or empty
// folder, a folder with no PNG, or a corrupt PNG is a one-line error naming the path.
int mdl_omniglot_load(const char *root, int side, mdl_dataset *out, int32_t *n_classes_out, char *err,
                      size_t errlen);

// Where Debian's font packages install the faces the glyph set is made of (fonts-dejavu-core,
// fonts-dejavu-extra, fonts-liberation, fonts-urw-base35), as mdl_glyphs_load's list.
#define MDL_GLYPH_FONTS \
    "/usr/share/fonts/truetype/dejavu:/usr/share/fonts/truetype/liberation:/usr/share/fonts/opentype/urw-base35"

// A many-class image set made from fonts (models/glyphs.c): each of the Latin letters, digits,
// Greek and basic Cyrillic letters is a class, each face of the .ttf/.otf files in the
// colon-separated folder list `fonts` that has all 174 of them is an image of every class, rendered
// by FreeType at side x side (ink 1, background 0); a character whose image equals an earlier
// one's in at least half the faces (homoglyphs: Latin A, Greek Alpha, Cyrillic A) is left out.
// Images are class after class, each class's faces in order; y the class. codepoints (may be
// NULL; room for 256) receives each class's character, *n_faces_out (may be NULL) the faces used.
// A missing folder, a folder with no font file, a file FreeType cannot read, or no face with
// every character is a one-line error naming it.
int mdl_glyphs_load(const char *fonts, int side, mdl_dataset *out, uint32_t *codepoints, int32_t *n_faces_out,
                    char *err, size_t errlen);

// The hyper-cleaning split (AIT 6.2.1, BVFIM 6.2, GALET): n_train and n_val samples drawn
// without replacement from the training file (seeded), the test file as test set; a fraction
// `corrupt` of the training labels replaced by one of the other classes, uniformly.
typedef struct {
    int n_train, n_val, n_test;
    double corrupt;
    uint64_t seed;
} mdl_hc_params;

typedef struct {
    mdl_dataset train, val, test;
    uint8_t *clean;  // [n_train] 1 if the training label was kept
} mdl_hc_data;

mdl_hc_params mdl_hc_default_params(void); // 5000 / 5000 / 10000, 50%, seed 0
int mdl_hc_load(const char *dir, const mdl_hc_params *p, mdl_hc_data *out, char *err, size_t errlen);
void mdl_hc_free(mdl_hc_data *d);

#ifdef __cplusplus
}
#endif

#endif
