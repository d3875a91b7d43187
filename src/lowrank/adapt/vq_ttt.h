// VQ-TTT — Xing, Guo, Hua, Lee, Li, Wang, Wang & Tu, 2025, "Demystifying the Visual Quality
// Paradox in Multimodal Large Language Models": visual-quality test-time tuning, a lightweight
// module that (1) puts a learnable low-rank kernel in front of the frozen vision encoder to modulate
// the image's frequency content and (2) fine-tunes only the encoder's shallow layers with LoRA, on the
// task's own unlabeled test inputs; each image then takes a single forward pass.
//
// Here the frozen encoder is an image classifier of this library (nn/image_classifier.h) standing
// in for the MLLM's vision tower, whose weights cannot be had here.
//
// (1) The spectral filter, rank r, on [B, C, H, W] images:
//   X = rfft2(x)                                    [B, C, H, ⌊W/2⌋ + 1]
//   G[k, l] = Σ_{i<r} u_i[min(k, H − k)] · v_i[l]   u_i ∈ ℝ^{⌊H/2⌋+1}, v_i ∈ ℝ^{⌊W/2⌋+1}
//   y = irfft2(G ⊙ X, size H × W)
// G is even in the row frequency and real, so it is the half-spectrum of a real, even (zero-phase)
// response: y is real, the circular convolution of x with a symmetric kernel, and a rank-1 G = u vᵀ
// is the pair of 1-D circular convolutions with ifft(u) along the columns and ifft(v) along the
// rows. Initialised at the identity response G ≡ 1: u_0 = v_0 = 1; for i ≥ 1, u_i ~ N(0, 0.01²) and
// v_i = 0 (LoRA's zero factor: G starts at exactly 1 and every v_i still gets a gradient).
// (2) LoRA (adapt/lora.h, PEFT's init: A ~ U(±1/√in), B = 0, s = α/r) on every linear slot of the
// first `lora_layers` layers (model.layers.<i>.*, i < lora_layers); every other tensor frozen.
//
// The test-time objective, over a minibatch of the unlabeled test images, minimised with Adam:
//   entropy   (1/B) Σ_b H(p_b), H(p) = −Σ_k p_k log p_k, p_b = softmax(logits_b)  (TENT, Wang et al.,
//             2021: the objective test-time-tuning methods use; the default)
//   infomax   (1/B) Σ_b H(p_b) − H((1/B) Σ_b p_b)  (SHOT's information maximisation, Liang et al.,
//             2020: confident per image, diverse over the batch, which keeps entropy minimisation from
//             collapsing onto one class)
// Deviation, named: the paper's own objective was not available to check (its text was not in
// the stored material); both candidates are offered and the repro reports both.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/adapt/lora.h"

namespace lowrank::nn {
class ImageClassifier;
}

namespace lowrank::adapt {

class SpectralFilter {
 public:
  // Throws InvalidArgument for a non-positive size or rank.
  SpectralFilter(int64_t height, int64_t width, int64_t rank, uint64_t seed);
  // From given factors u [r, ⌊H/2⌋ + 1], v [r, ⌊W/2⌋ + 1] (copied; tests and loading).
  SpectralFilter(int64_t height, int64_t width, at::Tensor u, at::Tensor v);

  // images [B, C, H, W] -> filtered images of the same shape and dtype. Throws InvalidArgument for
  // another spatial size.
  at::Tensor forward(const at::Tensor& images) const;
  // G over the rfft2 grid: [H, ⌊W/2⌋ + 1].
  at::Tensor response() const;

  int64_t rank() const { return u_.size(0); }
  // u and v, leaves that require a gradient.
  std::vector<at::Tensor> parameters() const { return {u_, v_}; }

 private:
  // u_0 = v_0 = 1, u_i ~ N(0, 0.01²) and v_i = 0 for i ≥ 1: G ≡ 1.
  static std::pair<at::Tensor, at::Tensor> identity_factors(int64_t height, int64_t width, int64_t rank,
                                                            uint64_t seed);
  SpectralFilter(int64_t height, int64_t width, std::pair<at::Tensor, at::Tensor> uv);
  int64_t height_, width_;
  at::Tensor u_, v_;
  at::Tensor row_index_;  // min(k, H − k) for k < H
};

struct VqTttConfig {
  int64_t filter_rank = 4;
  int64_t lora_layers = 2;  // LoRA on the slots of model.layers.<i>, i < lora_layers
  int64_t lora_rank = 4;
  double lora_alpha = 8;
  int64_t steps = 30;  // Adam steps of entropy minimisation
  int64_t batch_size = 64;
  double lr = 1e-3;
  uint64_t seed = 0;
  std::string objective = "entropy";  // entropy | infomax
};

// The adapted classifier: attaches LoRA to the model's shallow slots on construction (adapter name
// "vq_ttt") and detaches it on destruction, leaving the model as it was.
class VqTtt {
 public:
  // Throws InvalidArgument for a bad config (lora_layers outside 1..num_layers, non-positive
  // ranks, steps < 0, batch_size < 1, lr <= 0) or a model that already holds an adapter "vq_ttt".
  VqTtt(nn::ImageClassifier& model, VqTttConfig config);
  ~VqTtt();
  VqTtt(const VqTtt&) = delete;
  VqTtt& operator=(const VqTtt&) = delete;

  // Minimises the mean prediction entropy over seeded minibatches of `images` [N, C, H, W] (no
  // labels), config.steps Adam steps; returns each step's loss.
  std::vector<double> adapt(const at::Tensor& images);
  // One forward pass through the filter and the adapted model: logits [B, num_labels].
  at::Tensor logits(const at::Tensor& images) const;

  const SpectralFilter& filter() const { return filter_; }
  // The slots that hold LoRA, in order.
  const std::vector<std::string>& lora_slots() const { return lora_slots_; }
  // Every trainable tensor: the filter's u, v, then each LoRA's A, B.
  std::vector<at::Tensor> parameters() const;

 private:
  nn::ImageClassifier& model_;
  VqTttConfig config_;
  SpectralFilter filter_;
  std::vector<std::string> lora_slots_;
  std::vector<std::shared_ptr<LoraAdapter>> loras_;
};

// The mean Shannon entropy −Σ p log p of softmax(logits) over the rows (differentiable).
at::Tensor mean_prediction_entropy(const at::Tensor& logits);
// mean_prediction_entropy(logits) − H(the mean of the rows' softmax) (differentiable).
at::Tensor information_maximisation_loss(const at::Tensor& logits);

}  // namespace lowrank::adapt
