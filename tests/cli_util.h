// Running the `hypertape` command from tests: its exit status, stdout and stderr.
#ifndef HYPERTAPE_TEST_CLI_UTIL_H
#define HYPERTAPE_TEST_CLI_UTIL_H

typedef struct {
    int status;   // the exit status, or -1 (128 + N when killed by signal N)
    char out[8192], err[2048];
} cli_result;

// Runs `hypertape ARGS` through the shell (so ARGS may redirect), capturing stdout and stderr.
cli_result cli_exec(const char *args);
// Lines in s.
int cli_lines(const char *s);
// The path of the hypertape binary.
const char *cli_binary(void);

#endif
