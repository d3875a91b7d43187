// Shared by the trainer tests: a tiny model, a learnable token stream and a short run's config.
#pragma once

#include "lowrank/train/trainer.h"
#include "tests/testing.h"

namespace lowrank::train::testing_support {

inline nn::Model tiny_model(uint64_t seed) {
  return testing::tiny_llama({}, seed);
}

// A learnable stream: a repeated pseudo-random pattern of 24 symbols.
inline TokenStream pattern_stream(int64_t size) {
  at::Tensor t = at::empty({size}, at::kLong);
  for (int64_t i = 0; i < size; ++i) t[i] = (i * 7 + (i / 5) % 3) % 24;
  return TokenStream::from_tensor(t);
}

// 6 steps of 2 micro-batches of 2 windows of 12 tokens, warmup 2.
inline TrainerConfig small_config() {
  TrainerConfig c;
  c.steps = 6;
  c.batch_size = 2;
  c.grad_accum = 2;
  c.seq_len = 12;
  c.lr = 3e-3;
  c.min_lr = 3e-4;
  c.warmup_steps = 2;
  c.seed = 5;
  return c;
}

}  // namespace lowrank::train::testing_support
