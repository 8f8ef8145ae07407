// Handles and marks that outlive what they name: a handle from before a rewind or a reset, and a
// mark of another tape, past the end of the recording or dropped by a rewind, are errors
// (AD_EARG), never a silent read of whatever was recorded at the same place since. Every op
// entry point is tried with a stale operand; the epoch's wrap is pinned down.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/internal.h" // the wrap test sets the tape's epoch

#include <math.h>
#include <string.h>

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

// ---- every entry point, with one operand stale ----

// operand kinds: scalar, vector [4], matrix [4, 4], images [4, 16] (1 x 4 x 4), conv weights [4, 9]
enum { S, V, M, I, K, NONE };

static const int32_t rows2[2] = {3, 1}, labels4[4] = {0, 3, 1, 2};
static const uint8_t codes16[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static double table256[256];
static const ad_coded coded = {4, 4, codes16, table256, NULL, NULL, NULL};

typedef ad_var (*entry_fn)(ad_tape *t, ad_var a, ad_var b);
typedef ad_var (*unary_fn)(ad_tape *t, ad_var a);
typedef struct {
    const char *name;
    entry_fn fn; // an op of two operands, or a wrapper of one with parameters
    unary_fn un; // or an op of one operand
    int kind[2]; // the operands' kinds (NONE: unused)
} entry;

static ad_var call(const entry *en, ad_tape *t, ad_var a, ad_var b) {
    return en->un ? en->un(t, a) : en->fn(t, a, b);
}

static ad_var grad_of(ad_tape *t, ad_var f, ad_var x) {
    ad_var g = AD_NONE;
    ad_grad(t, f, 1, &x, &g, 0);
    return g;
}
static ad_var vjp_of(ad_tape *t, ad_var y, ad_var ybar) {
    ad_var x = ad_param(t, ad_scalar_shape(), (double[]){1}), g = AD_NONE;
    ad_vjp(t, ad_mul(t, y, x), ybar, 1, &x, &g, 0);
    return g;
}
// J v of y = a along the tangent b, a the output and the input (J = I): each operand is jvp's own
static ad_var jvp_of(ad_tape *t, ad_var a, ad_var b) {
    ad_var out = AD_NONE;
    ad_jvp(t, a, 1, &a, 1, &b, &out, 0);
    return out;
}
static ad_var hvp_of(ad_tape *t, ad_var x, ad_var v) {
    ad_var h = AD_NONE;
    ad_hvp(t, ad_sqnorm(t, x), x, v, &h, 0);
    return h;
}
static ad_var hvp_mixed_of(ad_tape *t, ad_var f, ad_var y) {
    ad_var h = AD_NONE, x = ad_param(t, ad_scalar_shape(), (double[]){2});
    ad_hvp_mixed(t, ad_mul(t, f, x), x, y, ad_fill(t, ad_scalar_shape(), 1), &h, 0);
    return h;
}

// clang-format off
// The ops with parameters, and the derivatives, through a two-operand wrapper.
static ad_var e_axpy(ad_tape *t, ad_var a, ad_var b) { return ad_axpy(t, a, 0.5, b); }
static ad_var e_scale(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_scale(t, a, 2); }
static ad_var e_shift(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_shift(t, a, 2); }
static ad_var e_pow(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_pow(t, a, 1.5); }
static ad_var e_clamp(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_clamp(t, a, 0, 1); }
static ad_var e_inbox(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_inbox(t, a, 0, 1); }
static ad_var e_powz(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_powz(t, a, 0.5); }
static ad_var e_sum_to(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_sum_to(t, a, ad_vec_shape(4)); }
static ad_var e_expand(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_expand(t, a, ad_mat_shape(4, 4)); }
static ad_var e_matvec(ad_tape *t, ad_var a, ad_var b) { return ad_matvec(t, a, b, 0); }
static ad_var e_matmul(ad_tape *t, ad_var a, ad_var b) { return ad_matmul(t, a, b, 0, 1); }
static ad_var e_coded(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_matmul_coded(t, &coded, a, 1); }
static ad_var e_reshape(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_reshape(t, a, ad_vec_shape(16)); }
static ad_var e_slice(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_slice(t, a, 1, 2); }
static ad_var e_pad(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_pad(t, a, 1, 6); }
static ad_var e_concat_n(ad_tape *t, ad_var a, ad_var b) { return ad_concat_n(t, 3, (ad_var[]){b, a, b}); }
static ad_var e_take_rows(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_take_rows(t, a, 2, rows2); }
static ad_var e_put_rows(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_put_rows(t, a, 6, 4, labels4); }
static ad_var e_xent(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_xent(t, a, labels4); }
static ad_var e_normp(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_normp(t, a, 3); }
static ad_var e_lq_smooth(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_lq_smooth(t, a, 0.5, 1e-3); }
static ad_var e_conv2d(ad_tape *t, ad_var a, ad_var b) { return ad_conv2d(t, a, b, 1, 4, 4, 4); }
static ad_var e_conv2d_wgrad(ad_tape *t, ad_var a, ad_var b) { return ad_conv2d_wgrad(t, a, b, 1, 4, 4, 1); }
static ad_var e_conv_flip(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_conv_flip(t, a, 1, 4); }
static ad_var e_maxpool2(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_maxpool2(t, a, 1, 4, 4); }
static ad_var e_pool_gather(ad_tape *t, ad_var a, ad_var b) { return ad_maxpool2_gather(t, a, b, 1, 4, 4); }
static ad_var e_pool_scatter(ad_tape *t, ad_var a, ad_var b) { return ad_maxpool2_scatter(t, a, b, 1, 4, 4); }
static ad_var e_channel_bias(ad_tape *t, ad_var a, ad_var b) { return ad_channel_bias(t, a, b, 4, 1, 1); }
static ad_var e_channel_norm(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_channel_norm(t, a, 2, 1e-5); }
static ad_var e_channel_rstd(ad_tape *t, ad_var a, ad_var b) { (void)b; return ad_channel_rstd(t, a, 2, 1e-5); }
static ad_var e_channel_proj(ad_tape *t, ad_var a, ad_var b) { return ad_channel_proj(t, a, b, 2); }
static ad_var e_channel_affine(ad_tape *t, ad_var a, ad_var b) { return ad_channel_affine(t, a, b, 2); }
static ad_var e_channel_sums(ad_tape *t, ad_var a, ad_var b) { return ad_channel_sums(t, a, b, 2); }
static ad_var e_batchnorm(ad_tape *t, ad_var a, ad_var b) { return ad_batchnorm(t, a, b, b, 4, 1, 1, 1e-5); }

static const entry entries[] = {
    {"add", ad_add, NULL, {M, V}}, {"sub", ad_sub, NULL, {M, V}}, {"axpy", e_axpy, NULL, {V, V}},
    {"mul", ad_mul, NULL, {S, M}}, {"div", ad_div, NULL, {V, V}}, {"min", ad_min, NULL, {V, V}},
    {"max", ad_max, NULL, {V, V}}, {"cmp", ad_cmp, NULL, {V, V}}, {"neg", NULL, ad_neg, {V, NONE}},
    {"scale", e_scale, NULL, {V, NONE}}, {"shift", e_shift, NULL, {V, NONE}},
    {"pow", e_pow, NULL, {V, NONE}}, {"abs", NULL, ad_abs, {V, NONE}},
    {"sqrt", NULL, ad_sqrt, {V, NONE}}, {"square", NULL, ad_square, {V, NONE}},
    {"exp", NULL, ad_exp, {V, NONE}}, {"log", NULL, ad_log, {V, NONE}},
    {"sin", NULL, ad_sin, {V, NONE}}, {"cos", NULL, ad_cos, {V, NONE}},
    {"tanh", NULL, ad_tanh, {V, NONE}}, {"sigmoid", NULL, ad_sigmoid, {V, NONE}},
    {"softplus", NULL, ad_softplus, {V, NONE}}, {"relu", NULL, ad_relu, {V, NONE}},
    {"clamp", e_clamp, NULL, {V, NONE}}, {"sign", NULL, ad_sign, {V, NONE}},
    {"step", NULL, ad_step, {V, NONE}}, {"inbox", e_inbox, NULL, {V, NONE}},
    {"powz", e_powz, NULL, {V, NONE}}, {"detach", NULL, ad_detach, {V, NONE}},
    {"sum", NULL, ad_sum, {M, NONE}}, {"mean", NULL, ad_mean, {M, NONE}},
    {"sum_rows", NULL, ad_sum_rows, {M, NONE}}, {"sum_cols", NULL, ad_sum_cols, {M, NONE}},
    {"max_all", NULL, ad_max_all, {M, NONE}}, {"sum_to", e_sum_to, NULL, {M, NONE}},
    {"expand", e_expand, NULL, {V, NONE}}, {"dot", ad_dot, NULL, {V, V}},
    {"matvec", e_matvec, NULL, {M, V}}, {"matmul", e_matmul, NULL, {M, M}},
    {"outer", ad_outer, NULL, {V, V}}, {"matmul_coded", e_coded, NULL, {M, NONE}},
    {"symv", ad_symv, NULL, {M, V}}, {"quadform", ad_quadform, NULL, {M, V}},
    {"reshape", e_reshape, NULL, {M, NONE}}, {"slice", e_slice, NULL, {V, NONE}},
    {"pad", e_pad, NULL, {V, NONE}}, {"concat", ad_concat, NULL, {V, S}},
    {"concat_n", e_concat_n, NULL, {V, S}}, {"take_rows", e_take_rows, NULL, {M, NONE}},
    {"put_rows", e_put_rows, NULL, {M, NONE}}, {"logsumexp", NULL, ad_logsumexp, {M, NONE}},
    {"log_softmax", NULL, ad_log_softmax, {M, NONE}}, {"softmax", NULL, ad_softmax, {M, NONE}},
    {"xent", e_xent, NULL, {M, NONE}}, {"sqnorm", NULL, ad_sqnorm, {V, NONE}},
    {"normp", e_normp, NULL, {V, NONE}}, {"lq_smooth", e_lq_smooth, NULL, {V, NONE}},
    {"conv2d", e_conv2d, NULL, {I, K}}, {"conv2d_wgrad", e_conv2d_wgrad, NULL, {I, I}},
    {"conv_flip", e_conv_flip, NULL, {K, NONE}}, {"maxpool2", e_maxpool2, NULL, {I, NONE}},
    {"maxpool2_gather", e_pool_gather, NULL, {I, I}}, {"maxpool2_scatter", e_pool_scatter, NULL, {M, I}},
    {"channel_bias", e_channel_bias, NULL, {M, V}}, {"batchnorm", e_batchnorm, NULL, {M, V}},
    {"channel_norm", e_channel_norm, NULL, {M, NONE}}, {"channel_rstd", e_channel_rstd, NULL, {M, NONE}},
    {"channel_proj", e_channel_proj, NULL, {M, M}}, {"channel_affine", e_channel_affine, NULL, {M, V}},
    {"channel_sums", e_channel_sums, NULL, {M, M}},
    {"grad (output)", grad_of, NULL, {S, S}}, {"grad (input)", grad_of, NULL, {S, S}},
    {"vjp", vjp_of, NULL, {V, V}}, {"jvp", jvp_of, NULL, {V, V}}, {"hvp", hvp_of, NULL, {V, V}},
    {"hvp_mixed", hvp_mixed_of, NULL, {S, S}},
};
// clang-format on

// A parameter of the kind, entries in (0.1, 0.9): inside every domain above.
static ad_var make(ad_tape *t, int kind) {
    static const double v[16] = {.5, .2, .7, .4, .3, .8, .6, .1, .45, .55, .25, .35, .65, .75, .15, .85};
    double big[64]; // the larger kinds: v, then distinct entries in (0.1, 0.9)
    for (int i = 0; i < 64; i++) big[i] = i < 16 ? v[i] : 0.1 + 0.8 * ((i * 37) % 64 + 0.5) / 64;
    ad_shape s = kind == S   ? ad_scalar_shape()
                 : kind == V ? ad_vec_shape(4)
                 : kind == I ? ad_mat_shape(4, 16)
                 : kind == K ? ad_mat_shape(4, 9)
                             : ad_mat_shape(4, 4);
    return ad_param(t, s, big);
}

static void every_entry(void) {
    TEST_CASE("handles: every op refuses a stale operand, which the same op takes live") {
        for (int i = 0; i < 256; i++) table256[i] = 0.01 * i;
        for (size_t e = 0; e < sizeof entries / sizeof entries[0]; e++) {
            const entry *en = &entries[e];
            for (int pos = 0; pos < 2; pos++) {
                if (en->kind[pos] == NONE) continue;
                // the stale operand is recorded, rewound away, and its place taken by a node of
                // the same shape: an op that read the place would find a valid operand there
                ad_tape *t = ad_tape_new(NULL);
                ad_mark m = ad_tape_mark(t);
                ad_var stale = make(t, en->kind[pos]);
                ad_tape_rewind(t, m);
                ad_var x[2];
                for (int k = 0; k < 2; k++) x[k] = en->kind[k] == NONE ? AD_NONE : make(t, en->kind[k]);
                ad_var live = call(en, t, x[0], x[1]);
                EXPECT(live != AD_NONE && ad_tape_status(t) == AD_OK, "%s live: %s", en->name,
                       ad_tape_error(t));
                ad_var in[2] = {x[0], x[1]};
                in[pos] = stale;
                ad_var r = call(en, t, in[0], in[1]);
                EXPECT(r == AD_NONE && ad_tape_status(t) == AD_EARG && has(ad_tape_error(t), "stale"),
                       "%s, operand %d stale: status %d, %s", en->name, pos + 1, ad_tape_status(t),
                       ad_tape_error(t));
                ad_tape_free(t);
            }
        }
    }
}

// ---- single handles ----

static void single(void) {
    TEST_CASE("handles: a handle from before a rewind does not read the node recorded in its place") {
        ad_tape *t = ad_tape_new(NULL);
        ad_mark m = ad_tape_mark(t);
        ad_var x = ad_scalar(t, NAN);
        ad_tape_rewind(t, m);
        ad_var y = ad_scalar(t, 10); // at x's place
        EXPECT(isnan(ad_item(t, x)) && ad_item(t, y) == 10, "x reads %g", ad_item(t, x));
        EXPECT(!ad_tape_holds(t, x) && ad_tape_holds(t, y), "holds");
        EXPECT(ad_tape_status(t) == AD_OK, "reading is not an error: %s", ad_tape_error(t));
        EXPECT(!ad_exp(t, x) && ad_tape_status(t) == AD_EARG &&
                   has(ad_tape_error(t), "exp: operand 1 is a stale handle"),
               "%s", ad_tape_error(t));
        ad_tape_free(t);
    }
    TEST_CASE("handles: a reset makes every handle stale; AD_NONE, bare numbers and other tapes' "
              "handles are named as such") {
        ad_tape *t = ad_tape_new(NULL), *u = ad_tape_new(NULL);
        ad_var x = ad_scalar(t, 1);
        ad_tape_reset(t);
        ad_var y = ad_scalar(t, 2);
        EXPECT(!ad_tape_holds(t, x) && ad_tape_holds(t, y) && isnan(ad_item(t, x)), "after reset");
        EXPECT(!ad_neg(t, x) && has(ad_tape_error(t), "stale"), "%s", ad_tape_error(t));
        struct { ad_var v; const char *says; } c[] = {
            {AD_NONE, "AD_NONE"}, {3, "not a handle"}, {-y, "not a handle"}, {1000, "not a node of this tape"}};
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            ad_tape_reset(t);
            ad_var z = ad_scalar(t, 2);
            ad_var v = i == 3 ? z + c[i].v : c[i].v; // past the end, in the tape's epoch
            EXPECT(!ad_tape_holds(t, v) && !ad_sqrt(t, v) && has(ad_tape_error(t), c[i].says),
                   "case %zu: %s", i, ad_tape_error(t));
            EXPECT(ad_tape_holds(t, z) && !ad_tape_holds(NULL, z), "holds");
        }
        ad_var w = ad_scalar(u, 5); // u's first node: t cannot tell it from its own node there
        EXPECT(ad_tape_holds(u, w) && !ad_tape_holds(u, y), "another tape");
        ad_tape_free(t);
        ad_tape_free(u);
    }
    TEST_CASE("handles: the epoch wraps from 2^31 - 1 to 1, deterministically") {
        ad_tape *t = ad_tape_new(NULL);
        ad_var old = ad_scalar(t, 1); // epoch 1
        ad_mark m0 = ad_tape_mark(t);
        t->epoch = 0x7fffffff;        // as after 2^31 - 2 rewinds
        ad_mark m = ad_tape_mark(t);
        ad_var x = ad_scalar(t, 2);
        ad_tape_rewind(t, m);
        EXPECT(t->epoch == 1 && !ad_tape_holds(t, x), "epoch %u", t->epoch);
        ad_var y = ad_scalar(t, 3);
        EXPECT(ad_tape_holds(t, y) && ad_item(t, y) == 3 && y != x, "the new node");
        EXPECT(ad_tape_holds(t, old) && ad_item(t, old) == 1, "nodes below the mark stay live");
        ad_tape_rewind(t, m0);
        EXPECT(ad_tape_status(t) == AD_OK && !ad_tape_holds(t, y), "%s", ad_tape_error(t));
        ad_tape_free(t);
    }
    TEST_CASE("handles: a gradient at every step of a rewinding loop, with negated adjoints") {
        ad_tape *t = ad_tape_new(NULL);
        double x0[3] = {0.5, -1, 2};
        ad_var x = ad_param(t, ad_vec_shape(3), x0), first = AD_NONE;
        ad_mark m = ad_tape_mark(t);
        for (int it = 0; it < 50; it++) {
            // f = sum(-(x - 3 x) - x^2 / 2): gradient 2 - x, through sub and neg
            ad_var y = ad_sub(t, ad_neg(t, ad_sub(t, x, ad_scale(t, x, 3))),
                              ad_scale(t, ad_square(t, x), 0.5));
            ad_var g, h;
            EXPECT(ad_grad(t, ad_sum(t, y), 1, &x, &g, 0) == AD_OK, "%s", ad_tape_error(t));
            ad_var v = ad_const(t, ad_vec_shape(3), x0);
            EXPECT(ad_hvp(t, ad_sum(t, y), x, v, &h, 0) == AD_OK, "%s", ad_tape_error(t));
            for (int i = 0; i < 3; i++)
                EXPECT(ad_value(t, g)[i] == 2 - x0[i] && ad_value(t, h)[i] == -x0[i],
                       "step %d entry %d: %g %g", it, i, ad_value(t, g)[i], ad_value(t, h)[i]);
            if (!it) first = g;
            ad_tape_rewind(t, m);
        }
        EXPECT(!ad_tape_holds(t, first) && ad_tape_holds(t, x), "the first step's gradient is stale");
        ad_tape_free(t);
    }
}

// ---- marks ----

static void marks(void) {
    TEST_CASE("marks: another tape's, a zeroed one, one past the end and a stale one are errors") {
        ad_tape *t = ad_tape_new(NULL), *u = ad_tape_new(NULL);
        ad_scalar(u, 0), ad_scalar(u, 0), ad_scalar(u, 0);
        ad_var x = ad_scalar(t, 1);
        ad_mark m1 = ad_tape_mark(t); // 2 nodes
        ad_scalar(t, 2), ad_scalar(t, 3);
        ad_mark m3 = ad_tape_mark(t); // 4 nodes
        ad_scalar(t, 4);
        struct {
            const char *what;
            ad_mark m;
            int record; // nodes recorded after the rewind to m1, before the rewind to m
            const char *says;
        } c[] = {{"another tape's", ad_tape_mark(u), 0, "not a mark of this tape"},
                 {"zeroed", {0}, 0, "not a mark of this tape"},
                 {"past the end", m3, 0, "past the end"},
                 {"stale", m3, 3, "stale"}};
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            ad_tape_clear_error(t);
            ad_tape_rewind(t, m1); // 2 nodes
            for (int k = 0; k < c[i].record; k++) ad_scalar(t, 5); // m3's place recorded over
            int32_t n = ad_tape_nodes(t);
            ad_tape_rewind(t, c[i].m);
            EXPECT(ad_tape_status(t) == AD_EARG && has(ad_tape_error(t), "rewind") &&
                       has(ad_tape_error(t), c[i].says),
                   "%s: %s", c[i].what, ad_tape_error(t));
            EXPECT(ad_tape_nodes(t) == n && ad_item(t, x) == 1, "%s: nothing dropped", c[i].what);
        }
        ad_tape_clear_error(t);
        ad_tape_reset(t);
        ad_scalar(t, 1), ad_scalar(t, 1);
        ad_tape_rewind(t, m1);
        EXPECT(ad_tape_status(t) == AD_EARG && has(ad_tape_error(t), "stale"),
               "a mark from before a reset: %s", ad_tape_error(t));
        ad_tape_free(t);
        ad_tape_free(u);
    }
    TEST_CASE("marks: rewinding to the same mark again and again, and to a mark below, stays valid") {
        ad_tape *t = ad_tape_new(NULL);
        ad_var x = ad_scalar(t, 1);
        ad_mark m0 = ad_tape_mark(t);
        ad_scalar(t, 2);
        ad_mark m1 = ad_tape_mark(t);
        for (int i = 0; i < 5; i++) {
            ad_scalar(t, 3);
            ad_tape_rewind(t, m1);
            ad_tape_rewind(t, m1); // nothing to drop
        }
        ad_tape_rewind(t, m0);
        ad_tape_rewind(t, m0);
        EXPECT(ad_tape_status(t) == AD_OK && ad_tape_nodes(t) == m0.nodes && ad_item(t, x) == 1, "%s",
               ad_tape_error(t));
        ad_tape_free(t);
    }
}

void test_ad_handles(void) {
    single();
    every_entry();
    marks();
}
