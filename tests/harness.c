// The harness's counters and the closing line.
#include "harness.h"

#include <stdarg.h>
#include <string.h>

static int passed, failed, case_failed;
static const char *current, *filter;

void th_set_filter(const char *f) { filter = f; }
int th_selected(const char *name) { return !filter || strstr(name, filter) != NULL; }

void th_begin(const char *name) {
    current = name;
    case_failed = 0;
}

void th_end(void) {
    if (case_failed) failed++;
    else passed++;
    current = NULL;
}

void th_failf(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "FAIL %s (%s:%d): ", current ? current : "?", file, line);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    case_failed = 1;
}

int th_summary(void) {
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

const char *th_join(char *buf, size_t size, int n, const char *const *s) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n && len < size; i++) len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? " " : "", s[i]);
    return buf;
}
