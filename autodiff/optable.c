// The op table: ad_ops[op] points at the definition each op file gives next to its code.
#include "internal.h"

#define AD_OP_PTR(E, name) [OP_##E] = &ad_def_##name,
const ad_op_def *const ad_ops[] = {AD_OP_LIST(AD_OP_PTR)};
#undef AD_OP_PTR

_Static_assert(sizeof ad_ops / sizeof ad_ops[0] == OP_COUNT, "one table entry per op");
