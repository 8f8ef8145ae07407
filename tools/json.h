// The command's machine output and input: one small JSON writer for everything it prints as
// JSON (numbers in the fewest digits that read back to the same bits, NaN and infinities as null, strings escaped),
// and a small reader for the settings of an earlier run (--settings, --resume).
#ifndef HYPERTAPE_JSON_H
#define HYPERTAPE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

// ---- writing: json_begin, then keys and values (objects and arrays nest), then json_end ----

enum { JSON_MAX_DEPTH = 16 };

typedef struct {
    FILE *f;
    int depth;
    int count[JSON_MAX_DEPTH];   // values written at each level
    char closer[JSON_MAX_DEPTH]; // '}' or ']'
    bool after_key;
} json_writer;

void json_begin(json_writer *w, FILE *f); // opens the outermost object
void json_end(json_writer *w);            // closes it and ends the line
void json_key(json_writer *w, const char *key);
void json_object(json_writer *w);         // opens an object (as a value)
void json_array(json_writer *w);
void json_close(json_writer *w);          // closes the object or array opened last
void json_number(json_writer *w, double v);
void json_int(json_writer *w, long long v);
void json_bool(json_writer *w, bool v);
void json_null(json_writer *w);
void json_string(json_writer *w, const char *s);
void json_numbers(json_writer *w, const double *v, int n); // an array of numbers

// ---- reading ----

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_kind;

typedef struct json_value json_value;
struct json_value {
    json_kind kind;
    char *text;          // NUMBER: its text as written; STRING: the decoded string; BOOL: "1" / "0"
    char *key;           // as a member of an object
    json_value *items;   // ARRAY / OBJECT members
    int n_items;
};

// Parses text (one value, whitespace around it allowed). NULL with a message in err on an error
// ("offset 31: expected ':' after a key").
json_value *json_parse(const char *text, char *err, size_t errlen);
void json_free(json_value *v);
// The member named key of an object (NULL if none or not an object).
const json_value *json_get(const json_value *obj, const char *key);

#endif
