// Sorted folder listings (listing.h), shared by the Omniglot and glyph readers.
#include "listing.h"
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void mdl_names_free(mdl_names *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    *s = (mdl_names){0};
}

int mdl_names_push(mdl_names *s, const char *a, const char *b) {
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

static int has_suffix(const char *name, const char *const *suffixes) {
    size_t n = strlen(name);
    for (; suffixes && *suffixes; suffixes++) {
        size_t k = strlen(*suffixes);
        if (n > k && strcmp(name + n - k, *suffixes) == 0) return 1;
    }
    return 0;
}

int mdl_list_dir(const char *dir, int want_dirs, const char *const *suffixes, const char *what, mdl_names *out,
                 char *err, size_t errlen) {
    *out = (mdl_names){0};
    DIR *d = opendir(dir);
    if (!d) return mdl_fail(err, errlen, "%s: %s", dir, strerror(errno));
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        if (e->d_name[0] == '.' || (!want_dirs && !has_suffix(e->d_name, suffixes))) continue;
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
        if (keep && mdl_names_push(out, dir, e->d_name)) rc = mdl_fail(err, errlen, "%s: out of memory", dir);
    }
    closedir(d);
    if (!rc && out->n == 0) rc = mdl_fail(err, errlen, "%s: no %s", dir, what);
    if (rc) mdl_names_free(out);
    else qsort(out->v, (size_t)out->n, sizeof *out->v, by_name);
    return rc;
}
