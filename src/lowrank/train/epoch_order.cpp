// Epoch permutations of the training rows (epoch_order.h).
#include "lowrank/train/epoch_order.h"

#include <ATen/CPUGeneratorImpl.h>

#include <vector>

#include "lowrank/core/random.h"

namespace lowrank::train {

at::Tensor EpochOrder::rows(uint64_t first, int64_t count) {
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t j = first + static_cast<uint64_t>(i);
    const int64_t epoch = static_cast<int64_t>(j / static_cast<uint64_t>(rows_));
    if (epoch != epoch_) {
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(splitmix64(seed_ ^ splitmix64(epoch)));
      perm_ = at::randperm(rows_, gen, at::kLong);
      epoch_ = epoch;
    }
    out[static_cast<size_t>(i)] = perm_.data_ptr<int64_t>()[j % static_cast<uint64_t>(rows_)];
  }
  return at::tensor(out, at::kLong);
}

}  // namespace lowrank::train
