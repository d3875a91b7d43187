// Shared by the compression tests: a small model whose shapes every method's rules accept, and a
// deterministic token stream over its vocabulary.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "lowrank/nn/model.h"
#include "tests/testing.h"

namespace lowrank::compress::compress_testing {

// Hidden 64, intermediate 128, vocabulary 32: group size 64, 2:4 and SVDQuant's ranks all fit.
inline nn::Model small_model(uint64_t seed) {
  testing::TinyLlama shape;
  shape.vocab_size = 32;
  shape.hidden_size = 64;
  shape.intermediate_size = 128;
  shape.heads = 4;
  shape.kv_heads = 2;
  return testing::tiny_llama(shape, seed);
}

// n tokens of a repeating pseudo-random pattern over the 32 symbols.
inline at::Tensor token_stream(int64_t n) {
  at::Tensor t = at::empty({n}, at::kLong);
  for (int64_t i = 0; i < n; ++i) t[i] = (i * 7 + (i / 5) % 3) % 32;
  return t;
}

}  // namespace lowrank::compress::compress_testing
