// `hypertape gradcheck`: a method's hypergradient at the start point against central differences
// of the value it differentiates (blo_check_hypergrad), with a verdict: PASS exits 0, FAIL (or a
// NaN) exits 1. A method whose direction is not the gradient of an objective says so (exit 2).
#include "cli_record.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *claim_word(blo_grad_claim c) {
    return c == BLO_GRAD_EXACT ? "exact" : "approximate";
}

static void report_json(const cli_plan *p, const blo_check_report *r, const blo_check_params *cp) {
    json_writer w;
    cli_json_begin(&w, stdout, p);
    json_key(&w, "verdict");
    json_string(&w, r->pass ? "PASS" : "FAIL");
    json_key(&w, "claim");
    json_string(&w, claim_word(r->claim));
    json_key(&w, "coordinates");
    json_int(&w, r->checked);
    json_key(&w, "worst");
    json_string(&w, r->worst_in_z ? "z" : "x");
    json_key(&w, "worst_index");
    json_int(&w, r->worst_index);
    const char *keys[] = {"analytic", "numeric", "abs_err", "worst_rel_err", "worst_ratio", "rtol", "atol"};
    const double v[] = {r->analytic, r->numeric, r->abs_err, r->rel_err, r->worst_ratio, cp->rtol, cp->atol};
    for (int k = 0; k < 7; k++) json_key(&w, keys[k]), json_number(&w, v[k]);
    json_end(&w);
}

int cli_gradcheck(const cli_args *a) {
    char err[600];
    if (cli_refuse_ranks("gradcheck", "it runs in one process (each rank would run the whole check)")) return 2;
    cli_plan p = {0};
    mdl_model m;
    double *x0 = NULL, *y0;
    memset(&m, 0, sizeof m);
    json_value *js = a->settings ? cli_earlier_settings(a, err, sizeof err) : NULL;
    int rc = a->settings && !js ? 2 : 0;
    if (!rc && cli_plan_make(a, a->method, js, 0, &p, err, sizeof err)) rc = 2;
    if (!rc && cli_plan_model(&p, &m, &x0, &y0, err, sizeof err)) rc = 2;
    blo_check_params cp = blo_check_default_params();
    cp.rtol = a->rtol, cp.atol = a->atol;
    blo_check_report r = {0};
    if (!rc) {
        r = blo_check_hypergrad(&m.prob, p.config, x0, y0, m.z_prior, &cp);
        if (r.status) {
            rc = r.claim == BLO_GRAD_NONE ? 2 : 1;
            snprintf(err, sizeof err, "%s", r.msg);
        }
    }
    if (!rc) {
        errno = 0;
        if (a->json) report_json(&p, &r, &cp);
        else printf("%s on %s: %s\n  tolerance: |analytic - numeric| <= %g + %g max(|analytic|, |numeric|) "
                    "for each entry; worst ratio %.3g\n", p.label, p.entry->name, r.msg, cp.atol, cp.rtol,
                    r.worst_ratio);
        if (fflush(stdout) || ferror(stdout))
            rc = 1, snprintf(err, sizeof err, "cannot write the report: %s", strerror(errno ? errno : EIO));
        else if (!r.pass)
            rc = 1, snprintf(err, sizeof err, "FAIL: %s[%d]: analytic %.12g, numeric %.12g (rel %.3g)",
                             r.worst_in_z ? "z" : "x", r.worst_index, r.analytic, r.numeric, r.rel_err);
    }
    if (rc) fprintf(stderr, "hypertape gradcheck: %s\n", err);
    if (p.config) cli_plan_free(&p);
    free(x0);
    mdl_free(&m);
    json_free(js);
    return rc;
}
