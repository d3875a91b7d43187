// The bridge between ops/group_quant's tensors and its raw kernels (internal: group_quant.cpp and
// the tests, which call the kernels directly). Kept out of group_quant_kernels.h, which must not
// include ATen (group_quant_avx2.cpp is compiled without the precompiled header).
#pragma once

#include "lowrank/ops/group_quant.h"
#include "lowrank/ops/group_quant_kernels.h"

namespace lowrank::ops::detail {

// The raw view the kernels read of `w`'s tensors (which must be contiguous, CPU, and outlive the
// view).
GroupQuantView view_of(const GroupQuantized& w);

}  // namespace lowrank::ops::detail
