// Image degradations; see image_degrade.h.
#include "lowrank/data/image_degrade.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"

namespace lowrank::data {

namespace {

constexpr std::array<const char*, 8> kNames = {"clean",    "blur",  "noise",   "jpeg",
                                               "contrast", "gamma", "sharpen", "downsample"};

// ITU-T T.81 Annex K, table K.1: the luminance quantisation table, row-major.
constexpr std::array<int, 64> kLuminanceTable = {
    16, 11,  10,  16, 24, 40, 51, 61, 12,  12,  14,  19,  26, 58, 60, 55,  14,  13,  16,  24, 40, 57,
    69, 56,  14,  17, 22, 29, 51, 87, 80,  62,  18,  22,  37, 56, 68, 109, 103, 77,  24,  35, 55, 64,
    81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98,  112, 100, 103, 99};

void check_images(const at::Tensor& images) {
  LR_CHECK(images.dim() == 4 && images.is_floating_point(), InvalidArgument,
           "degrade: images must be [B, C, H, W] floating point, got ", images.sizes(), " ",
           images.scalar_type());
}

// The orthonormal DCT-II matrix of size 8: D[k, n] = c_k cos(π (2n + 1) k / 16).
at::Tensor dct8(at::ScalarType dtype) {
  at::Tensor d = at::empty({8, 8}, at::kDouble);
  auto a = d.accessor<double, 2>();
  for (int k = 0; k < 8; ++k)
    for (int n = 0; n < 8; ++n)
      a[k][n] = (k == 0 ? std::sqrt(1.0 / 8) : std::sqrt(2.0 / 8)) *
                std::cos(std::numbers::pi * (2 * n + 1) * k / 16.0);
  return d.to(dtype);
}

// libjpeg's jpeg_quality_scaling and jpeg_add_quant_table (force_baseline): the table for quality q.
at::Tensor quant_table(int quality, at::ScalarType dtype) {
  const int scale = quality < 50 ? 5000 / quality : 200 - 2 * quality;
  at::Tensor t = at::empty({8, 8}, at::kDouble);
  auto a = t.accessor<double, 2>();
  for (int i = 0; i < 64; ++i)
    a[i / 8][i % 8] = std::clamp((kLuminanceTable[static_cast<size_t>(i)] * scale + 50) / 100, 1, 255);
  return t.to(dtype);
}

at::Tensor jpeg_like(const at::Tensor& images, int quality) {
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  const int64_t Hp = (H + 7) / 8 * 8, Wp = (W + 7) / 8 * 8;
  const at::Tensor x = at::constant_pad_nd(images * 255.0 - 128.0, {0, Wp - W, 0, Hp - H}, 0.0);
  // Blocks [B, C, Hp/8, Wp/8, 8, 8].
  const at::Tensor blocks = x.view({B, C, Hp / 8, 8, Wp / 8, 8}).permute({0, 1, 2, 4, 3, 5});
  const at::Tensor D = dct8(images.scalar_type()), Q = quant_table(quality, images.scalar_type());
  const at::Tensor coeff = at::matmul(at::matmul(D, blocks), D.t());
  const at::Tensor kept = at::round(coeff / Q) * Q;
  const at::Tensor back = at::matmul(at::matmul(D.t(), kept), D);
  const at::Tensor image = back.permute({0, 1, 2, 4, 3, 5}).reshape({B, C, Hp, Wp});
  return ((image.narrow(2, 0, H).narrow(3, 0, W) + 128.0) / 255.0).contiguous();
}

}  // namespace

std::string DegradationSpec::name() const {
  const std::string kind_name = kNames[static_cast<size_t>(kind)];
  return kind == Degradation::kClean ? kind_name : kind_name + ":" + std::to_string(severity);
}

const std::vector<std::string>& degradation_kinds() {
  static const std::vector<std::string> names(kNames.begin() + 1, kNames.end());
  return names;
}

DegradationSpec parse_degradation(std::string_view text) {
  if (text == "clean") return {};
  const size_t colon = text.find(':');
  const std::string_view kind = text.substr(0, colon);
  std::string known;
  for (const std::string& k : degradation_kinds()) known += (known.empty() ? "" : ", ") + k;
  DegradationSpec spec;
  bool found = false;
  for (size_t i = 1; i < kNames.size(); ++i)
    if (kind == kNames[i]) {
      spec.kind = static_cast<Degradation>(i);
      found = true;
    }
  LR_CHECK(found, InvalidArgument, "degradation \"", text, "\": unknown kind \"", kind, "\" (known: clean, ",
           known, "; written kind:severity)");
  LR_CHECK(colon != std::string_view::npos, InvalidArgument, "degradation \"", text,
           "\": give a severity, e.g. \"", kind, ":3\"");
  const std::string_view number = text.substr(colon + 1);
  int severity = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), severity);
  LR_CHECK(ec == std::errc() && end == number.data() + number.size() && severity >= 1 && severity <= 5,
           InvalidArgument, "degradation \"", text, "\": severity must be an integer 1..5, got \"", number,
           "\"");
  spec.severity = severity;
  return spec;
}

at::Tensor gaussian_blur(const at::Tensor& images, double sigma) {
  check_images(images);
  LR_CHECK(sigma > 0, InvalidArgument, "gaussian_blur: sigma must be positive, got ", sigma);
  const auto radius = static_cast<int64_t>(std::ceil(3 * sigma));
  const at::Tensor t = at::arange(-radius, radius + 1, images.options());
  at::Tensor k = at::exp(-(t * t) / (2 * sigma * sigma));
  k = k / k.sum();
  const int64_t C = images.size(1), n = 2 * radius + 1;
  const at::Tensor padded = at::replication_pad2d(images, {radius, radius, radius, radius});
  const std::array<int64_t, 2> one{1, 1}, none{0, 0};
  const at::Tensor rows =
      at::conv2d(padded, k.view({1, 1, 1, n}).expand({C, 1, 1, n}).contiguous(), {}, one, none, one, C);
  return at::conv2d(rows, k.view({1, 1, n, 1}).expand({C, 1, n, 1}).contiguous(), {}, one, none, one, C);
}

at::Tensor degrade(const at::Tensor& images, const DegradationSpec& spec, uint64_t seed) {
  check_images(images);
  const double s = spec.severity;
  at::Tensor out;
  switch (spec.kind) {
    case Degradation::kClean:
      return images.clone();
    case Degradation::kBlur:
      out = gaussian_blur(images, 0.5 * s);
      break;
    case Degradation::kNoise: {
      at::Generator gen = at::detail::createCPUGenerator(seed);
      out = images + at::randn(images.sizes(), gen, images.options()) * (0.04 * s);
      break;
    }
    case Degradation::kJpeg:
      out = jpeg_like(images, 100 - 18 * spec.severity);
      break;
    case Degradation::kContrast: {
      const at::Tensor mean = images.mean({2, 3}, true);
      out = (images - mean) * (1 - 0.15 * s) + mean;
      break;
    }
    case Degradation::kGamma:
      out = at::pow(images.clamp(0, 1), 1 + 0.3 * s);
      break;
    case Degradation::kSharpen:
      out = images + (images - gaussian_blur(images, 1.0)) * (0.5 * s);
      break;
    case Degradation::kDownsample: {
      const double f = 1 + s / 2;
      const int64_t H = images.size(2), W = images.size(3);
      const auto h = std::max<int64_t>(1, static_cast<int64_t>(H / f));
      const auto w = std::max<int64_t>(1, static_cast<int64_t>(W / f));
      const at::Tensor small = at::_upsample_bilinear2d_aa(images, {h, w}, false, std::nullopt, std::nullopt);
      out = at::upsample_bilinear2d(small, {H, W}, false, std::nullopt, std::nullopt);
      break;
    }
  }
  return out.clamp(0, 1).contiguous();
}

}  // namespace lowrank::data
