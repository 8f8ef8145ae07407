// Running the `hypertape` command from tests (the binary's path comes from tests/meson.build).
#include "cli_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef HYPERTAPE_BIN
#error "HYPERTAPE_BIN: the path of the hypertape binary (set by tests/meson.build)"
#endif

const char *cli_binary(void) { return HYPERTAPE_BIN; }

cli_result cli_exec(const char *args) {
    cli_result r = {.status = -1};
    char cmd[2048], errpath[] = "/tmp/hypertape-cli-XXXXXX";
    int fd = mkstemp(errpath);
    if (fd < 0) return r;
    close(fd);
    snprintf(cmd, sizeof cmd, "%s %s 2>%s", HYPERTAPE_BIN, args, errpath);
    FILE *p = popen(cmd, "r");
    if (p) {
        size_t n = fread(r.out, 1, sizeof r.out - 1, p);
        r.out[n] = 0;
        while (fgetc(p) != EOF) {} // the rest, unread
        int st = pclose(p);
        r.status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
    }
    FILE *e = fopen(errpath, "r");
    if (e) {
        size_t n = fread(r.err, 1, sizeof r.err - 1, e);
        r.err[n] = 0;
        fclose(e);
    }
    remove(errpath);
    return r;
}

int cli_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}
