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

// Sets requires_grad on every tensor `target` trains, as train() does before its optimizer.
inline void make_trainable(TrainTarget& target) {
  for (auto& [n, p] : target.params) p.requires_grad_(true);
}

// Fresh gradients of the LM loss on 2 windows of 8 tokens drawn from `sampler`.
inline void lm_gradients(const nn::Model& model, const TokenStream& data, WindowSampler& sampler,
                         optim::Optimizer& optimizer) {
  optimizer.zero_grad();
  lm_loss(model, sample_windows(data, sampler, 2, 8)).backward();
}

// lm_gradients, then one update at `lr`.
inline void lm_step(const nn::Model& model, const TokenStream& data, WindowSampler& sampler,
                    optim::Optimizer& optimizer, double lr) {
  lm_gradients(model, data, sampler, optimizer);
  optimizer.step(lr);
}

}  // namespace lowrank::train::testing_support
