// Test helpers of the state space and long-convolution mixers (s4d, s4, long_conv, sgconv, mamba):
// a mixer's tensor by name, the largest difference of two tensors, and step() against forward under
// left padding.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix::testing {

// max |a − b| in float64 (complex128 for complex inputs).
inline double max_diff(const at::Tensor& a, const at::Tensor& b) {
  const at::ScalarType dtype =
      at::promote_types(at::promote_types(a.scalar_type(), b.scalar_type()), at::kDouble);
  return (a.to(dtype) - b.to(dtype)).abs().max().item<double>();
}

// The mixer's tensor `name`: its full name ("model.layers.0.mixer.D") or its last components ("D").
inline at::Tensor tensor_named(const nn::TokenMixer& mixer, const std::string& name) {
  for (const auto& [full, t] : mixer.tensors())
    if (full == name || full.ends_with("." + name)) return t;
  throw NotFound("no tensor " + name + " in mixer " + mixer.name());
}

// Runs x [B, T, H] through forward (with row `padded_row`'s first `pad` positions marked padding)
// and through step() position by position: every real position agrees within `tolerance`, every step
// output is finite, and the padded row equals its unpadded suffix run alone (padding adds nothing).
inline void expect_step_equals_forward_with_padding(const nn::TokenMixer& mixer, const at::Tensor& x,
                                                    int64_t padded_row, int64_t pad, double tolerance) {
  const int64_t B = x.size(0), T = x.size(1);
  const at::Tensor valid = at::ones({B, T}, at::kBool);
  valid[padded_row].narrow(0, 0, pad).fill_(false);
  nn::MixerContext context;
  context.valid = valid;
  const at::Tensor full = mixer.forward(x, context);
  const auto state = mixer.new_state(B);
  for (int64_t t = 0; t < T; ++t) {
    nn::MixerContext one;
    one.valid = valid.narrow(1, t, 1);
    const at::Tensor y = mixer.step(x.narrow(1, t, 1), *state, one);
    EXPECT_TRUE(y.isfinite().all().item<bool>());
    for (int64_t r = 0; r < B; ++r)
      if (valid[r][t].item<bool>()) {
        EXPECT_LE((y[r][0] - full[r][t]).abs().max().item<double>(), tolerance)
            << "row " << r << ", position " << t;
      }
  }
  const at::Tensor alone = mixer.forward(x.narrow(0, padded_row, 1).narrow(1, pad, T - pad), {});
  EXPECT_LE((alone[0] - full[padded_row].narrow(0, pad, T - pad)).abs().max().item<double>(), tolerance);
}

}  // namespace lowrank::mix::testing
