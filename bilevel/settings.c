// Settings as data: parsing NAME=VALUE into a params struct through its table of blo_setting
// rows, with every value checked against the row's type and bounds, and formatting values back
// so that they parse to the same bits.
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const blo_setting *blo_setting_find(const blo_setting *table, const char *name) {
    for (const blo_setting *r = table; r && r->name && name; r++)
        if (!strcmp(r->name, name)) return r;
    return NULL;
}

// "(an integer from 1 to 2147483647)", "(a number > 0)", "(one of plain, momentum, adam)".
static void accepted(const blo_setting *r, char *buf, size_t n) {
    switch (r->type) {
    case BLO_SET_INT:
        snprintf(buf, n, "an integer from %.0f to %.0f", r->lo, r->hi);
        return;
    case BLO_SET_DOUBLE:
        if (isinf(r->hi)) snprintf(buf, n, "a number %s %g", r->flags & BLO_SET_LO_OPEN ? ">" : ">=", r->lo);
        else snprintf(buf, n, "a number in %s%g, %g%s", r->flags & BLO_SET_LO_OPEN ? "(" : "[", r->lo,
                      r->hi, r->flags & BLO_SET_HI_OPEN ? ")" : "]");
        return;
    case BLO_SET_BOOL:
        snprintf(buf, n, "1 or 0");
        return;
    case BLO_SET_CHOICE: {
        size_t len = (size_t)snprintf(buf, n, "one of ");
        for (int k = 0; r->choices[k] && len < n; k++)
            len += (size_t)snprintf(buf + len, n - len, "%s%s", k ? ", " : "", r->choices[k]);
        return;
    }
    case BLO_SET_STRING:
        snprintf(buf, n, "at most %zu characters", r->size ? r->size - 1 : 0);
        return;
    }
}

static blo_status bad(const blo_setting *r, const char *value, blo_error *err) {
    char what[160];
    accepted(r, what, sizeof what);
    return blo_fail(err, BLO_EARG, "%s: bad value '%s' (%s)", r->name, value, what);
}

static bool in_bounds(const blo_setting *r, const void *params);

static const char *const true_words[] = {"1", "true", "yes", "on", NULL};
static const char *const false_words[] = {"0", "false", "no", "off", NULL};

static int word_index(const char *const *words, const char *w) {
    for (int k = 0; words && words[k]; k++)
        if (!strcmp(words[k], w)) return k;
    return -1;
}

blo_status blo_setting_parse(const blo_setting *r, void *params, const char *value,
                             blo_error *err) {
    if (!r || !params || !value) return blo_fail(err, BLO_EARG, "setting: NULL argument");
    char *field = (char *)params + r->offset, *end;
    errno = 0;
    switch (r->type) {
    case BLO_SET_INT: {
        // strtoll and a range check: never a cast of an out-of-range double
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno || (double)v < r->lo || (double)v > r->hi || v < INT_MIN || v > INT_MAX)
            return bad(r, value, err);
        *(int *)(void *)field = (int)v;
        break;
    }
    case BLO_SET_DOUBLE: {
        double v = strtod(value, &end), keep = *(double *)(void *)field;
        *(double *)(void *)field = v;
        if (!*value || *end || errno || !in_bounds(r, params)) {
            *(double *)(void *)field = keep;
            return bad(r, value, err);
        }
        break;
    }
    case BLO_SET_BOOL: {
        int on = word_index(true_words, value) >= 0, off = word_index(false_words, value) >= 0;
        if (!on && !off) return bad(r, value, err);
        *(int *)(void *)field = on;
        break;
    }
    case BLO_SET_CHOICE: {
        int k = word_index(r->choices, value);
        if (k < 0) return bad(r, value, err);
        *(int *)(void *)field = k;
        break;
    }
    case BLO_SET_STRING:
        if (strlen(value) + 1 > r->size) return bad(r, value, err);
        memcpy(field, value, strlen(value) + 1);
        break;
    }
    return blo_ok(err);
}

const char *blo_setting_format(const blo_setting *r, const void *params, char *buf, size_t n) {
    const char *field = (const char *)params + r->offset;
    switch (r->type) {
    case BLO_SET_INT:
    case BLO_SET_BOOL:
        snprintf(buf, n, "%d", *(const int *)(const void *)field);
        break;
    case BLO_SET_DOUBLE: { // the shortest text that reads back to the same bits
        double v = *(const double *)(const void *)field;
        char text[32];
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(text, sizeof text, "%.*g", digits, v);
            if (strtod(text, NULL) == v) break;
        }
        snprintf(buf, n, "%s", text);
        break;
    }
    case BLO_SET_CHOICE: {
        int k = *(const int *)(const void *)field, count = 0;
        while (r->choices[count]) count++;
        snprintf(buf, n, "%s", k >= 0 && k < count ? r->choices[k] : "?");
        break;
    }
    case BLO_SET_STRING:
        snprintf(buf, n, "%s", field);
        break;
    }
    return buf;
}

// Calls fn on each NAME=VALUE word of s (separated by spaces) until it fails.
blo_status blo_assignments_each(const char *s, blo_status (*fn)(const char *name, const char *value,
                                                                  void *ctx, blo_error *err),
                                 void *ctx, blo_error *err) {
    char word[1024];
    for (const char *p = s ? s : ""; *p;) {
        p += strspn(p, " \t\n");
        size_t len = strcspn(p, " \t\n");
        if (!len) break;
        if (len >= sizeof word) return blo_fail(err, BLO_EARG, "setting '%.40s...' is too long", p);
        memcpy(word, p, len);
        word[len] = 0;
        p += len;
        char *eq = strchr(word, '=');
        if (!eq || eq == word) return blo_fail(err, BLO_EARG, "setting '%s' is not NAME=VALUE", word);
        *eq = 0;
        blo_status st = fn(word, eq + 1, ctx, err);
        if (st) return st;
    }
    return blo_ok(err);
}

typedef struct {
    const blo_setting *table;
    void *params;
    int skip_unknown;
} apply_ctx;

static blo_status apply_one(const char *name, const char *value, void *ctx, blo_error *err) {
    apply_ctx *a = ctx;
    const blo_setting *r = blo_setting_find(a->table, name);
    if (!r) return a->skip_unknown ? BLO_OK : blo_fail(err, BLO_EARG, "unknown setting '%s'", name);
    return blo_setting_parse(r, a->params, value, err);
}

blo_status blo_settings_apply(const blo_setting *table, void *params, const char *assignments,
                              int skip_unknown, blo_error *err) {
    apply_ctx a = {table, params, skip_unknown};
    return blo_assignments_each(assignments, apply_one, &a, err);
}

// Whether the field of row r in params is a value the row accepts.
static bool in_bounds(const blo_setting *r, const void *params) {
    const char *field = (const char *)params + r->offset;
    switch (r->type) {
    case BLO_SET_INT: {
        int v = *(const int *)(const void *)field;
        return v >= r->lo && v <= r->hi;
    }
    case BLO_SET_DOUBLE: {
        double v = *(const double *)(const void *)field;
        return isfinite(v) && (r->flags & BLO_SET_LO_OPEN ? v > r->lo : v >= r->lo) &&
               (r->flags & BLO_SET_HI_OPEN ? v < r->hi : v <= r->hi);
    }
    case BLO_SET_BOOL: {
        int v = *(const int *)(const void *)field;
        return v == 0 || v == 1;
    }
    case BLO_SET_CHOICE: {
        int v = *(const int *)(const void *)field, count = 0;
        while (r->choices[count]) count++;
        return v >= 0 && v < count;
    }
    case BLO_SET_STRING:
        return memchr(field, 0, r->size) != NULL;
    }
    return false;
}

blo_status blo_settings_check(const blo_setting *table, const void *params, const char *owner,
                              blo_error *err) {
    for (const blo_setting *r = table; r && r->name; r++) {
        if (in_bounds(r, params)) continue;
        char v[64], what[160];
        if (r->type == BLO_SET_CHOICE) snprintf(v, sizeof v, "%d", *(const int *)(const void *)((const char *)params + r->offset));
        else blo_setting_format(r, params, v, sizeof v);
        accepted(r, what, sizeof what);
        return blo_fail(err, BLO_EARG, "%s: %s = %s is out of range (%s)", owner, r->name, v, what);
    }
    return blo_ok(err);
}
