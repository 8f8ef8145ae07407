// Datasets: an IDX reader (the MNIST file format, raw or gzip through zlib) and the
// hyper-cleaning split of an MNIST-format folder (FashionMNIST by default), and an Omniglot reader
// (PNG folders through libpng: models/omniglot.c). Every failure is a
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

// Omniglot's layout, ROOT/ALPHABET/CHARACTER/*.png (models/omniglot.c): every drawing, decoded by
// libpng to gray (white background 1, strokes 0: not inverted) and area-averaged to side x side
// (28 in MAML's Sec. 5.2), each pixel rounded to the nearest k/255 so that Xc holds X exactly.
// y is the character's index over all alphabets; folders and files are taken in strcmp order.
// *n_classes_out (may be NULL) = out->classes, the number of characters. A missing or empty
// folder, a folder with no PNG, or a corrupt PNG is a one-line error naming the path.
int mdl_omniglot_load(const char *root, int side, mdl_dataset *out, int32_t *n_classes_out, char *err,
                      size_t errlen);

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
