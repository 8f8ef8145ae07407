// A minimal test harness: named test cases, expectations that record failures without stopping,
// and the closing line "N passed, N failed".
#ifndef HYPERTAPE_TEST_HARNESS_H
#define HYPERTAPE_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

void th_begin(const char *name);
void th_end(void);
void th_failf(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int th_summary(void);
// Runs only the cases whose name contains this filter (NULL: all).
void th_set_filter(const char *filter);
int th_selected(const char *name);

// The n strings joined by spaces into buf [size] (settings lists: "n=5 a=2"); returns buf.
const char *th_join(char *buf, size_t size, int n, const char *const *s);

// EXPECT(cond, printf-args): on failure report the location and message, the case fails.
#define EXPECT(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) th_failf(__FILE__, __LINE__, __VA_ARGS__);                            \
    } while (0)

// A whole case: TEST_CASE("name") { ... } runs the block as one counted case.
#define TEST_CASE(name)                                                                    \
    for (int th_once_ = (th_selected(name) ? (th_begin(name), 1) : 0); th_once_; th_once_ = 0, th_end())

#endif
