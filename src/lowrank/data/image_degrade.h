// Controlled image degradations and stylistic shifts — the "visual quality" axis of Xing et al.,
// 2025, "Demystifying the Visual Quality Paradox in Multimodal Large Language Models", which applies each to
// every image at graded severities and asks whether a frozen model reads the degraded image better or worse
// than the clean one.
//
// Images are [B, C, H, W] float pixels in [0, 1]; every output is clamped back to [0, 1]. Severity
// s ∈ {1, …, 5}, larger is stronger:
//   blur        Gaussian blur, σ = 0.5·s pixels (separable, kernel radius ⌈3σ⌉, edges replicated)
//   noise       x + N(0, (0.04·s)²) per pixel, seeded
//   jpeg        JPEG-like: 8×8 blocks (zero-padded), orthonormal DCT-II, each coefficient rounded to
//               a multiple of the JPEG luminance table (ITU-T T.81 Annex K, table K.1) scaled by
//               libjpeg's quality rule for quality q = 100 − 18·s, inverse DCT. Pixels are first
//               scaled to 0..255 and level-shifted by 128, as JPEG does; there is no chroma
//               subsampling (the images here are grey) and no entropy coding (lossless).
//   contrast    (x − mean) · (1 − 0.15·s) + mean, the mean per image and channel
//   gamma       x^(1 + 0.3·s)  (darker mid-tones)
//   sharpen     unsharp masking: x + 0.5·s · (x − blur_{σ=1}(x))
//   downsample  area downsampling by f = 1 + s/2 (bilinear resize to ⌊H/f⌋ × ⌊W/f⌋, antialiased),
//               then bilinear upsampling back to H × W
// A spec is written "kind:severity" ("blur:3"); "clean" is the identity.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::data {

enum class Degradation { kClean, kBlur, kNoise, kJpeg, kContrast, kGamma, kSharpen, kDownsample };

struct DegradationSpec {
  Degradation kind = Degradation::kClean;
  int severity = 0;          // 1..5 (0 for clean)
  std::string name() const;  // "blur:3", "clean"
};

// The kinds by name, in the order above.
const std::vector<std::string>& degradation_kinds();

// Parses "kind:severity" or "clean". Throws InvalidArgument naming the text and the known kinds, or
// the allowed severities.
DegradationSpec parse_degradation(std::string_view text);

// The degraded images. `seed` seeds the noise (the same seed gives the same pixels). Throws
// InvalidArgument for images that are not [B, C, H, W] floating point.
at::Tensor degrade(const at::Tensor& images, const DegradationSpec& spec, uint64_t seed = 0);

// Gaussian blur of [B, C, H, W] images (σ > 0; separable, edges replicated): shared by the blur
// degradation, unsharp masking and the restoration baseline.
at::Tensor gaussian_blur(const at::Tensor& images, double sigma);

}  // namespace lowrank::data
