// The test runner: every layer's tests in one binary. `hypertape-tests [filter]` runs the cases
// whose name contains filter.
#include "harness.h"
#include "tests.h"

int main(int argc, char **argv) {
    if (argc > 1) th_set_filter(argv[1]);
    test_ad_ops();
    test_ad_engine();
    test_ad_errors();
    test_ad_handles();
    test_ad_products();
    test_ad_coded_loss();
    test_ad_thin();
    test_ad_sparse();
    test_ad_smallk();
    test_ad_pool();
    test_ad_image();
    test_bilevel();
    test_bilevel_methods();
    test_bilevel_stochastic();
    test_ad_jvp();
    test_bilevel();
    test_bilevel_methods();
    test_bilevel_fhg();
    test_bilevel_solver();
    test_bilevel_meta();
    test_bilevel_peers();
    test_bilevel_solvers();
    test_bilevel_checkpoint();
    test_bilevel_tasks();
    test_bilevel_comm();
    test_models_data();
    test_models_omniglot();
    test_models_glyphs();
    test_models_fewshot();
    test_models_toys();
    test_models_hyperclean();
    test_models_pentagram();
    test_cli();
    test_cli_runs();
    return th_summary();
}
