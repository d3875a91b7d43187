// Helpers of the Scatterbrain / Performer / local attention tests: a mixer of one variant built
// with random float64 projections, and the independent float64 references they are checked
// against (dense masks built by loops, materialised attention matrices).
#pragma once

#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <memory>
#include <string>

#include "lowrank/core/json.h"
#include "lowrank/mix/scatterbrain.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"
#include "tests/nn/reference.h"

namespace lowrank::mix::testing {

inline nn::ModelConfig kernel_config(int64_t heads, int64_t kv_heads, int64_t head_dim) {
  lowrank::testing::TinySpec s;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.hidden = heads * head_dim;
  Json c = lowrank::testing::tiny_config(s);
  c["architectures"] = {"LowrankMixerForCausalLM"};
  c["model_type"] = "lowrank_mixer";
  return nn::ModelConfig::from_json(c, "test");
}

// A mixer of `variant` for layer 1 with N(0, 0.5²) float64 projections (seeded).
inline std::unique_ptr<KernelAttentionMixer> make_mixer(KernelMixerVariant variant,
                                                        const nn::ModelConfig& config, const Json& options,
                                                        uint64_t weight_seed = 3) {
  at::manual_seed(weight_seed);
  nn::MixerSpec spec{config, 1, "model.layers.1.mixer", options, nullptr, nullptr};
  spec.projection = [](const std::string&, int64_t out, int64_t in, bool) {
    return std::make_shared<const nn::DenseOperator>(at::randn({out, in}, at::kDouble).mul(0.5),
                                                     at::Tensor());
  };
  spec.tensor = [](const std::string&, std::vector<int64_t> shape, nn::ParamInit, const at::Tensor&) {
    return at::randn(shape, at::kDouble);
  };
  return std::make_unique<KernelAttentionMixer>(spec, variant);
}

// q, k, v [B, H, T, d], float64, seeded.
struct Qkv {
  at::Tensor q, k, v;
};
inline Qkv random_qkv(int64_t B, int64_t H, int64_t T, int64_t d, uint64_t seed, double scale = 1.0) {
  at::manual_seed(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  return {at::randn({B, H, T, d}, f64) * scale, at::randn({B, H, T, d}, f64) * scale,
          at::randn({B, H, T, d}, f64)};
}

// The local window as a dense [T, T] mask, from its definition (loops).
inline at::Tensor window_mask(int64_t T, int64_t w, bool causal) {
  at::Tensor m = at::zeros({T, T}, at::kBool);
  auto a = m.accessor<bool, 2>();
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j)
      a[i][j] = causal ? (i - j >= 0 && i - j < w) : (j - i >= -(w / 2) && j - i < (w + 1) / 2);
  return m;
}

inline at::Tensor causal_mask(int64_t T) {
  return at::ones({T, T}, at::kBool).tril();
}

// Softmax attention restricted to `allowed` [.., T, T] (float64, materialised).
inline at::Tensor masked_softmax_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const at::Tensor& allowed) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const at::Tensor s = at::matmul(q, k.transpose(-1, -2)) * scale;
  const at::Tensor e = at::exp(s) * allowed.to(at::kDouble);
  return at::matmul(e / e.sum(-1, true), v);
}

// Positive cosh features without any stabiliser (float64): exp([Wx̂, −Wx̂] − ‖x̂‖²/2)/√m.
inline at::Tensor cosh_features(const at::Tensor& x, const at::Tensor& w) {
  const double d = static_cast<double>(x.size(-1));
  const at::Tensor xh = x * std::pow(d, -0.25);
  const at::Tensor u = at::matmul(xh, w.t());
  const at::Tensor both = at::cat({u, -u}, -1);
  return at::exp(both - xh.square().sum(-1, true) / 2) / std::sqrt(static_cast<double>(both.size(-1)));
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Expects `make` to throw InvalidArgument whose message contains every one of `parts`.
template <typename F>
void expect_invalid(F make, std::initializer_list<const char*> parts) {
  try {
    make();
    ADD_FAILURE() << "accepted";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    for (const char* p : parts) EXPECT_NE(m.find(p), std::string::npos) << m;
  }
}

// For a causal mixer: forward on x [B, T, hidden] (unpadded, no RoPE) against step() row by row,
// and ∂y_i/∂x_j = 0 for j > i.
inline void expect_causal_and_stepwise(const KernelAttentionMixer& mixer, int64_t hidden, int64_t T,
                                       double tol) {
  const int64_t B = 2;
  at::manual_seed(9);
  const at::Tensor x = at::randn({B, T, hidden}, at::kDouble).requires_grad_(true);
  nn::MixerContext ctx;
  const at::Tensor y = mixer.forward(x, ctx);
  {
    at::NoGradGuard no_grad;
    const std::unique_ptr<nn::MixerState> state = mixer.new_state(B);
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor row = mixer.step(x.detach().narrow(1, t, 1), *state, ctx);
      EXPECT_LE(max_abs_diff(row, y.detach().narrow(1, t, 1)), tol) << mixer.name() << ", position " << t;
    }
  }
  for (const int64_t i : {int64_t{0}, T / 2, T - 2}) {
    const at::Tensor g = torch::autograd::grad({y.select(1, i).sum()}, {x}, {}, /*retain_graph=*/true)[0];
    for (int64_t j = 0; j < T; ++j) {
      const double norm = g.select(1, j).abs().sum().item<double>();
      if (j > i) EXPECT_EQ(norm, 0.0) << mixer.name() << ": y_" << i << " depends on x_" << j;
    }
  }
}

}  // namespace lowrank::mix::testing
