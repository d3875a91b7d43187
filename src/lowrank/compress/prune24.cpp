// 2:4 magnitude pruning: in every group of four consecutive input channels of a row, keep the two
// weights of largest |w| and zero the others (the semi-structured pattern of NVIDIA's sparse tensor
// cores; Mishra et al., 2021, "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378). The
// pruned base is what EoRA's paper compensates beside quantised ones. No calibration data and no
// weight update (SparseGPT/Wanda would use activations; plain magnitude is the baseline).
#include <ATen/ATen.h>

#include "lowrank/compress/methods.h"

namespace lowrank::compress {

std::shared_ptr<StoredOperator> compress_prune24(const SlotInput& in, const CompressOptions&) {
  const int64_t out = in.weight.size(0), n = in.weight.size(1);
  const at::Tensor groups = in.weight.reshape({out, n / 4, 4});
  const at::Tensor keep = std::get<1>(at::topk(groups.abs(), 2, -1));
  const at::Tensor mask = at::zeros_like(groups).scatter_(-1, keep, 1.0);
  return Sparse24Operator::from_dense((groups * mask).reshape({out, n}), in.bias);
}

}  // namespace lowrank::compress
