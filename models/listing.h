// Sorted folder listings for the readers of image trees (Omniglot's PNG folders, font folders):
// names in strcmp order, not readdir's, so that the same tree gives the same dataset everywhere.
// Internal to models/ (not installed).
#ifndef HYPERTAPE_MODELS_LISTING_H
#define HYPERTAPE_MODELS_LISTING_H

#include <stddef.h>

typedef struct {
    char **v;
    int n, cap;
} mdl_names;

void mdl_names_free(mdl_names *s);

// Appends "a/b" (just b when a is empty). Returns 0, or -1 when out of memory.
int mdl_names_push(mdl_names *s, const char *a, const char *b);

// The full paths of dir's sub-folders (want_dirs) or of its regular files whose name ends in one
// of suffixes (a NULL-terminated list), sorted; hidden entries are skipped. An empty listing is an
// error "DIR: no WHAT".
int mdl_list_dir(const char *dir, int want_dirs, const char *const *suffixes, const char *what, mdl_names *out,
                 char *err, size_t errlen);

#endif
