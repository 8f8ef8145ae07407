// A small JSON writer and reader for the command's machine output and its settings files. The
// writer prints doubles in the fewest digits that read back to the same bits, and
// non-finite numbers as null; the reader keeps numbers as their text so a setting parses from
// exactly what was written.
#include "json.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// ---- writing ----

// Separates a value from the one before it at this level (none right after a key).
static void value_begin(json_writer *w) {
    if (w->after_key) w->after_key = false;
    else if (w->count[w->depth]++ > 0) fputs(", ", w->f);
}

static void open(json_writer *w, char c, char closer) {
    value_begin(w);
    fputc(c, w->f);
    if (w->depth + 1 < JSON_MAX_DEPTH) w->depth++;
    w->count[w->depth] = 0;
    w->closer[w->depth] = closer;
}

void json_begin(json_writer *w, FILE *f) {
    memset(w, 0, sizeof *w);
    w->f = f;
    open(w, '{', '}');
}

void json_close(json_writer *w) {
    if (w->depth == 0) return;
    fputc(w->closer[w->depth], w->f);
    w->depth--;
}

void json_end(json_writer *w) {
    while (w->depth > 0) json_close(w);
    fputc('\n', w->f);
}

static void put_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void json_key(json_writer *w, const char *key) {
    if (w->count[w->depth]++ > 0) fputs(", ", w->f);
    put_string(w->f, key);
    fputs(": ", w->f);
    w->after_key = true;
}

void json_object(json_writer *w) { open(w, '{', '}'); }
void json_array(json_writer *w) { open(w, '[', ']'); }

void json_number(json_writer *w, double v) {
    value_begin(w);
    if (!isfinite(v)) {
        fputs("null", w->f);
        return;
    }
    char buf[32]; // the shortest text that reads back to the same bits
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, w->f);
}

void json_int(json_writer *w, long long v) {
    value_begin(w);
    fprintf(w->f, "%lld", v);
}

void json_bool(json_writer *w, bool v) {
    value_begin(w);
    fputs(v ? "true" : "false", w->f);
}

void json_null(json_writer *w) {
    value_begin(w);
    fputs("null", w->f);
}

void json_string(json_writer *w, const char *s) {
    value_begin(w);
    put_string(w->f, s);
}

void json_numbers(json_writer *w, const double *v, int n) {
    json_array(w);
    for (int i = 0; i < n; i++) json_number(w, v[i]);
    json_close(w);
}

// ---- reading ----

typedef struct {
    const char *s;
    size_t pos;
    char *err;
    size_t errlen;
    bool failed;
} parser;

static void fail(parser *p, const char *what) {
    if (!p->failed) snprintf(p->err, p->errlen, "offset %zu: %s", p->pos, what);
    p->failed = true;
}

static void skip_ws(parser *p) {
    while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r') p->pos++;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n), d[n] = 0;
    return d;
}

// A string at p->pos (after its opening quote has been seen), decoded; \u escapes below 0x80 only
// (the settings files this reads are ASCII).
static char *parse_string(parser *p) {
    size_t cap = 16, n = 0;
    char *out = malloc(cap);
    p->pos++; // the quote
    while (out && !p->failed) {
        char c = p->s[p->pos++];
        if (c == '"') break;
        if (c == 0 || (unsigned char)c < 0x20) {
            fail(p, "unterminated string");
            break;
        }
        if (c == '\\') {
            char e = p->s[p->pos++];
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *k = e ? strchr(from, e) : NULL;
            if (k) c = to[k - from];
            else if (e == 'u') {
                unsigned v = 0;
                for (int i = 0; i < 4 && !p->failed; i++) { // stops at the first non-hex digit (or the end)
                    char h = p->s[p->pos];
                    int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                          : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                    if (d < 0) fail(p, "a \\u escape needs four hex digits");
                    else v = v * 16 + (unsigned)d, p->pos++;
                }
                if (!p->failed && (v == 0 || v >= 0x80)) fail(p, "only \\u escapes of ASCII characters are read");
                c = (char)v;
            } else {
                fail(p, "bad escape in a string");
            }
        }
        if (n + 2 > cap) {
            char *m = realloc(out, cap *= 2);
            if (!m) free(out);
            out = m;
        }
        if (out) out[n++] = c;
    }
    if (!out) fail(p, "out of memory");
    if (out) out[n] = 0;
    if (p->failed) free(out), out = NULL;
    return out;
}

static bool parse_value(parser *p, json_value *v, int depth);

static bool parse_items(parser *p, json_value *v, char closer, int depth) {
    int cap = 0;
    p->pos++;
    skip_ws(p);
    if (p->s[p->pos] == closer) {
        p->pos++;
        return true;
    }
    for (;;) {
        if (v->n_items == cap) {
            cap = cap ? 2 * cap : 8;
            json_value *m = realloc(v->items, sizeof *m * (size_t)cap);
            if (!m) {
                fail(p, "out of memory");
                return false;
            }
            v->items = m;
        }
        json_value *it = &v->items[v->n_items];
        memset(it, 0, sizeof *it);
        v->n_items++;
        skip_ws(p);
        if (closer == '}') {
            if (p->s[p->pos] != '"') {
                fail(p, "expected a key");
                return false;
            }
            if (!(it->key = parse_string(p))) return false;
            skip_ws(p);
            if (p->s[p->pos++] != ':') {
                fail(p, "expected ':' after a key");
                return false;
            }
        }
        if (!parse_value(p, it, depth + 1)) return false;
        skip_ws(p);
        char c = p->s[p->pos++];
        if (c == closer) return true;
        if (c != ',') {
            fail(p, closer == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
            return false;
        }
    }
}

static bool parse_value(parser *p, json_value *v, int depth) {
    skip_ws(p);
    const char *s = p->s + p->pos;
    if (depth > 64) {
        fail(p, "nested too deeply");
        return false;
    }
    if (*s == '{') return v->kind = JSON_OBJECT, parse_items(p, v, '}', depth);
    if (*s == '[') return v->kind = JSON_ARRAY, parse_items(p, v, ']', depth);
    if (*s == '"') return v->kind = JSON_STRING, (v->text = parse_string(p)) != NULL;
    static const struct { const char *word, *text; json_kind kind; } words[] = {
        {"true", "1", JSON_BOOL}, {"false", "0", JSON_BOOL}, {"null", "", JSON_NULL}};
    for (int k = 0; k < 3; k++)
        if (!strncmp(s, words[k].word, strlen(words[k].word))) {
            p->pos += strlen(words[k].word);
            v->kind = words[k].kind;
            return (v->text = dup_n(words[k].text, strlen(words[k].text))) != NULL;
        }
    size_t n = strspn(s, "+-0123456789.eE");
    if (n == 0) {
        fail(p, "expected a value");
        return false;
    }
    char *end, *num = dup_n(s, n);
    if (!num) return fail(p, "out of memory"), false;
    strtod(num, &end);
    if (*end) {
        free(num);
        fail(p, "bad number");
        return false;
    }
    v->kind = JSON_NUMBER, v->text = num;
    p->pos += n;
    return true;
}

static void free_members(json_value *v) {
    for (int i = 0; i < v->n_items; i++) free_members(&v->items[i]);
    free(v->items), free(v->text), free(v->key);
}

void json_free(json_value *v) {
    if (!v) return;
    free_members(v);
    free(v);
}

json_value *json_parse(const char *text, char *err, size_t errlen) {
    parser p = {.s = text ? text : "", .err = err, .errlen = errlen};
    json_value *v = calloc(1, sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (parse_value(&p, v, 0)) {
        skip_ws(&p);
        if (p.s[p.pos]) fail(&p, "text after the value");
    }
    if (p.failed) {
        json_free(v);
        return NULL;
    }
    return v;
}

const json_value *json_get(const json_value *obj, const char *key) {
    for (int i = 0; obj && obj->kind == JSON_OBJECT && i < obj->n_items; i++)
        if (obj->items[i].key && !strcmp(obj->items[i].key, key)) return &obj->items[i];
    return NULL;
}
