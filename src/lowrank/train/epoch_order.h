// The order in which an epoch-based loop (train/ctr.h, train/wave.h) visits its training rows:
// row j of the stream is row perm_e[j mod N] of the data, where epoch e = j / N draws the
// permutation perm_e from (seed, e). The whole state is the count of rows consumed, so a
// checkpoint stores one integer and a resumed run continues the same order.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::train {

class EpochOrder {
 public:
  EpochOrder(uint64_t seed, int64_t rows) : seed_(seed), rows_(rows) {}
  // Rows [first, first + count) of the stream as an int64 tensor. Caches the current epoch's
  // permutation.
  at::Tensor rows(uint64_t first, int64_t count);

 private:
  uint64_t seed_;
  int64_t rows_;
  int64_t epoch_ = -1;
  at::Tensor perm_;
};

}  // namespace lowrank::train
