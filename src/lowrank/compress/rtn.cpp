// Round-to-nearest group quantisation (the W4/W8 baseline of GPTQ, AWQ and SVDQuant's papers):
// per group of g = 64 consecutive input channels of a row, s = max|w| / q_max and
// q = clamp(round(w / s), −q_max − 1, q_max) with q_max = 7 (INT4) or 127 (INT8); Ŵ = s q.
// The packed format and its kernels are ops/group_quant.h. With --act-bits 4 the activations are
// quantised too (INT4 per token, same groups; ops/w4a4_gemm.h): the paper's naive W4A4 baseline.
#include "lowrank/compress/methods.h"
#include "lowrank/ops/group_quant.h"

namespace lowrank::compress {

std::shared_ptr<StoredOperator> compress_rtn(const SlotInput& in, const CompressOptions& options) {
  return std::make_shared<QuantizedOperator>(
      ops::quantize_groups(in.weight, options.bits, options.group_size), in.bias, options.act_bits);
}

}  // namespace lowrank::compress
