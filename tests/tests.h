// Each test file's entry point.
#ifndef HYPERTAPE_TESTS_H
#define HYPERTAPE_TESTS_H
void test_ad_ops(void);
void test_ad_engine(void);
void test_ad_errors(void);
void test_ad_handles(void);
void test_ad_products(void);
void test_ad_thin(void);
void test_ad_image(void);
void test_ad_jvp(void);
void test_bilevel(void);
void test_bilevel_methods(void);
void test_bilevel_fhg(void);
void test_bilevel_solver(void);
void test_bilevel_meta(void);
void test_bilevel_peers(void);
void test_bilevel_solvers(void);
void test_bilevel_stochastic(void);
void test_bilevel_checkpoint(void);
void test_bilevel_tasks(void);
void test_models_data(void);
void test_models_toys(void);
void test_models_hyperclean(void);
void test_models_pentagram(void);
void test_cli(void);
void test_cli_runs(void);
#endif
