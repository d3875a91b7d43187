// The encoder–decoder of the a-priori CP convolution study (Boukraichi et al., "A-priori compressed
// convolutions for wave simulators"): a small U-Net that advances the 2-D wave equation by `ahead`
// leapfrog steps, (u^{t−1}, u^t, c) → u^{t+ahead}, with every inner k×k convolution either dense or
// a rank-R CP convolution trained from scratch (nn/cp_conv.h).
//
// Shape (widths w₀ = C, w_l = 2C for l ≥ 1; k odd, "same" padding; L levels):
//   x̃   = x / s_in                                  (per-channel scales of u^{t−1}, u^t, c)
//   e₀  = GELU(stem(x̃))                            stem: dense k×k, 3 → w₀, at n × n
//   e_l = GELU(enc_l(AvgPool₂(e_{l−1})))           enc_l: w_{l−1} → w_l, at n/2^l   (l = 1..L)
//   d_L = e_L
//   d_{l−1} = GELU(Up₂(dec_l(d_l)) + e_{l−1})      dec_l: w_l → w_{l−1}, at n/2^l, then nearest ×2
//   ŷ   = u^t + s_out · head(d₀)                   head: dense k×k, w₀ → 1, at n × n
// The 2L inner convolutions (enc_l, dec_l) are the ones the study compresses; the stem and the head
// (3·C·k² and C·k² weights) stay dense in both variants, so the two differ only in the method.
// The decoder convolves before upsampling (at the coarse resolution) to keep the cost of a training
// step low on a CPU; the network predicts the change from u^t (a residual), scaled by s_out.
// The study's exact layer sizes are not in its text; this shape is ours and is named as such in the
// repro (repro/wave/README.md).
//
// Files: a directory with wave_config.json ({"model_type": "wave_cnn", "width", "levels",
// "kernel_size", "conv": "dense"|"cp", "rank", "input_scale": [3], "output_scale", and for a
// post-hoc model "compression": {...}}; unknown keys are kept) and model.safetensors:
//   stem.weight [C, 3, k, k], stem.bias, head.weight [1, C, k, k], head.bias,
//   encoder.<l−1>.{weight, bias} / decoder.<l−1>.{weight, bias}       (dense)
//   encoder.<l−1>.{a, b, c, d, bias} / decoder.<l−1>.{a, b, c, d, bias} (CP: A [T,R], B [S,R], C, D [k,R])
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/cp_conv.h"

namespace lowrank::nn {

struct WaveCnnConfig {
  int64_t width = 16;          // C
  int64_t levels = 2;          // L: downsamplings (the grid must be divisible by 2^L)
  int64_t kernel_size = 5;     // k, odd
  std::string conv = "dense";  // dense | cp
  int64_t rank = 0;            // R of every inner convolution (conv "cp")
  std::array<double, 3> input_scale = {1, 1, 1};
  double output_scale = 1;
  Json raw = Json::object();  // the file's keys (unknown ones kept on save)

  // InvalidArgument naming the field: width/levels < 1, an even k, an unknown conv, a CP rank < 1,
  // a non-positive scale.
  void check() const;
  OrderedJson to_json() const;
  static WaveCnnConfig from_json(const Json& j, const std::string& what);
  // "dense" or "cp:R" (the CLI's --conv) into conv and rank. InvalidArgument otherwise.
  void set_conv(const std::string& spec);
};

// One inner or outer convolution: dense (weight [T, S, k, k]) or CP (nn/cp_conv.h).
struct WaveConv {
  at::Tensor weight, bias;     // dense
  std::optional<CpConv2d> cp;  // CP (its own bias)

  at::Tensor forward(const at::Tensor& x) const;
  // K [T, S, k, k] (reconstructed for CP).
  at::Tensor kernel() const;
  int64_t parameter_count() const;
  void append(std::vector<std::pair<std::string, at::Tensor>>& out, const std::string& prefix) const;
};

class WaveCnn {
 public:
  // Fresh weights, seeded: dense convolutions as nn.Conv2d's default (kaiming_uniform_(a=√5),
  // bias U(±1/√fan_in)), CP factors as CpConv2d::random (the same variance of K).
  static WaveCnn random(const WaveCnnConfig& config, uint64_t seed);
  // NotFound for a directory without wave_config.json or a missing tensor; Corruption for a tensor
  // of the wrong shape or an unknown one.
  static WaveCnn load(const std::filesystem::path& dir);
  // Writes atomically (the directory appears whole or not at all).
  void save(const std::filesystem::path& dir) const;

  // Post-hoc CP: every inner convolution of a dense model decomposed at rank R by CP-ALS
  // (CpConv2d::from_kernel), the stem, head, biases and scales kept. `errors` (optional) receives
  // each kernel's relative error, in file order (encoder.0, …, decoder.0, …).
  static WaveCnn posthoc_cp(const WaveCnn& dense, int64_t rank, std::vector<double>* errors = nullptr,
                            int64_t max_iters = 100);

  // x [N, 3, n, n] (u^{t−1}, u^t, c) → ŷ [N, 1, n, n] (u^{t+ahead}). InvalidArgument for a wrong
  // channel count or a grid not divisible by 2^L.
  at::Tensor forward(const at::Tensor& x) const;

  const WaveCnnConfig& config() const { return config_; }
  void set_scales(const std::array<double, 3>& input_scale, double output_scale);
  // Every tensor under its file name.
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() const;
  void requires_grad(bool on);
  int64_t parameter_count() const;
  // Parameters of the 2L inner convolutions (the compressed ones), biases included.
  int64_t inner_parameter_count() const;
  // The model with each CP convolution replaced by a dense one of its reconstructed kernel (the
  // oracle of the CP path).
  WaveCnn materialized() const;

 private:
  WaveCnnConfig config_;
  WaveConv stem_, head_;
  std::vector<WaveConv> encoder_, decoder_;  // L each
};

// The per-channel scales of a training set: s_in = RMS of u^{t−1}, u^t and c, s_out = RMS of
// u^{t+ahead} − u^t (each floored at 1e-12). inputs [N, 3, n, n], targets [N, 1, n, n].
std::pair<std::array<double, 3>, double> wave_scales(const at::Tensor& inputs, const at::Tensor& targets);

}  // namespace lowrank::nn
