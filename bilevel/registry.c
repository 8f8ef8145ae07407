// The built-in methods' registry: a method is its own file defining blo_method_NAME and its line
// in bilevel/meson.build's `methods`, from which method_list.h is generated.
#include "internal.h"
#include "method_list.h"

#include <string.h>

#define DECLARE(name) extern const blo_method_type blo_method_##name;
BLO_METHODS(DECLARE)
#undef DECLARE

#define ENTRY(name) &blo_method_##name,
static const blo_method_type *const registry[] = {BLO_METHODS(ENTRY) NULL};
#undef ENTRY

const blo_method_type *const *blo_method_registry(void) { return registry; }

const blo_method_type *blo_method_find(const char *name) {
    for (int i = 0; name && registry[i]; i++)
        if (!strcmp(registry[i]->name, name)) return registry[i];
    return NULL;
}
