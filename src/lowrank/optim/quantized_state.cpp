// Block-wise dynamic 8-bit quantisation; see quantized_state.h.
#include "lowrank/optim/quantized_state.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "lowrank/core/error.h"

namespace lowrank::optim {

at::Tensor dynamic_map(bool is_signed) {
  // In float32 tensor arithmetic, as bitsandbytes builds it (linspace, midpoints and the decade
  // scale each rounded to float32): a map computed in float64 and rounded once differs from
  // bitsandbytes' in the last bit of about a third of its values.
  std::vector<at::Tensor> parts;
  const int max_exponent_bits = 7;
  for (int i = 0; i < max_exponent_bits; ++i) {
    // 2^i (signed) or 2^(i+1) (unsigned) linear steps in the decade [0.1, 1]·10^(i−6).
    const int64_t items = is_signed ? (int64_t{1} << i) : (int64_t{1} << (i + 1));
    const double scale = std::pow(10.0, i - (max_exponent_bits - 1));
    const at::Tensor boundaries = at::linspace(0.1, 1.0, items + 1, at::kFloat);
    const at::Tensor means = (boundaries.slice(0, 0, -1) + boundaries.slice(0, 1)) / 2.0;
    parts.push_back(means * scale);
    if (is_signed) parts.push_back(means * -scale);
  }
  parts.push_back(at::tensor({0.0f, 1.0f}, at::kFloat));
  return std::get<0>(at::cat(parts).sort());
}

namespace {

const at::Tensor& cached_map(bool is_signed) {
  static const at::Tensor signed_map = dynamic_map(true), unsigned_map = dynamic_map(false);
  return is_signed ? signed_map : unsigned_map;
}

}  // namespace

int64_t QuantizedTensor::bytes() const {
  if (!defined()) return 0;
  return codes.numel() + static_cast<int64_t>(absmax.nbytes());
}

QuantizedTensor quantize_blockwise(const at::Tensor& x_in, bool is_signed, int64_t block) {
  LR_CHECK(block >= 1, InvalidArgument, "quantize_blockwise: block must be >= 1, got ", block);
  at::NoGradGuard no_grad;
  const at::Tensor x = x_in.detach().to(at::kFloat).reshape({-1});
  const int64_t n = x.numel();
  const int64_t blocks = (n + block - 1) / block;
  // Pad to whole blocks with zeros (they quantize to the map's 0).
  at::Tensor padded = at::zeros({blocks * block}, x.options());
  padded.slice(0, 0, n).copy_(x);
  const at::Tensor b = padded.view({blocks, block});
  const at::Tensor absmax = std::get<0>(b.abs().max(1));
  LR_CHECK(is_signed || n == 0 || x.min().item<float>() >= 0, InvalidArgument,
           "quantize_blockwise: the unsigned map needs non-negative values");
  // x / absmax, with all-zero blocks divided by 1.
  const at::Tensor normalized = b / at::where(absmax > 0, absmax, at::ones_like(absmax)).unsqueeze(1);
  const at::Tensor map = cached_map(is_signed).to(x.device());
  // The nearest map value: count the midpoints below the value.
  const at::Tensor midpoints = (map.slice(0, 0, -1) + map.slice(0, 1)) / 2;
  const at::Tensor codes = at::bucketize(normalized.reshape({-1}), midpoints).slice(0, 0, n).to(at::kByte);
  QuantizedTensor q;
  q.codes = codes.contiguous();
  q.absmax = absmax.contiguous();
  q.shape = x_in.sizes().vec();
  q.is_signed = is_signed;
  q.block = block;
  return q;
}

at::Tensor dequantize_blockwise(const QuantizedTensor& q) {
  LR_CHECK(q.defined(), InvalidArgument, "dequantize_blockwise: empty tensor");
  const at::Tensor map = cached_map(q.is_signed).to(q.codes.device());
  const int64_t n = q.codes.numel();
  const at::Tensor values = map.index_select(0, q.codes.to(at::kLong));
  const at::Tensor block_of = at::arange(n, q.codes.options().dtype(at::kLong)).div(q.block, "floor");
  return (values * q.absmax.index_select(0, block_of)).view(q.shape);
}

void QuantizedMoments::restore(at::Tensor& exp_avg, at::Tensor& exp_avg_sq, at::ScalarType dtype) const {
  if (!defined()) return;
  exp_avg = dequantize_blockwise(m).to(dtype);
  exp_avg_sq = dequantize_blockwise(v).to(dtype);
}

void QuantizedMoments::keep(const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq) {
  m = quantize_blockwise(exp_avg, /*is_signed=*/true);
  v = quantize_blockwise(exp_avg_sq, /*is_signed=*/false);
}

void QuantizedMoments::append_state(std::vector<std::pair<std::string, at::Tensor>>& out,
                                    const std::string& name) const {
  if (!defined()) return;
  for (const auto& [key, q] : {std::pair{".exp_avg", &m}, std::pair{".exp_avg_sq", &v}}) {
    out.emplace_back(name + key + ".codes", q->codes.to(at::kCPU).contiguous());
    out.emplace_back(name + key + ".absmax", q->absmax.to(at::kCPU).contiguous());
    out.emplace_back(name + key + ".shape", at::tensor(q->shape, at::kLong));
  }
}

void QuantizedMoments::read_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                  const std::string& name, const at::Device& device) {
  auto find = [&](const std::string& n) -> const at::Tensor* {
    for (const auto& [k, t] : tensors)
      if (k == n) return &t;
    return nullptr;
  };
  m = {};
  v = {};
  if (!find(name + ".exp_avg.codes")) return;
  for (const auto& [key, q, is_signed] :
       {std::tuple{std::string("exp_avg"), &m, true}, std::tuple{std::string("exp_avg_sq"), &v, false}}) {
    const std::string base = name + "." + key;
    const at::Tensor* codes = find(base + ".codes");
    const at::Tensor* absmax = find(base + ".absmax");
    const at::Tensor* shape = find(base + ".shape");
    LR_CHECK(codes && absmax && shape && codes->scalar_type() == at::kByte, Corruption,
             "optimizer state for ", name, ": 8-bit ", key, " needs uint8 codes, absmax and shape");
    q->codes = codes->to(device).clone();
    q->absmax = absmax->to(device, at::kFloat).clone();
    const at::Tensor sh = shape->to(at::kLong).contiguous();
    q->shape.assign(sh.data_ptr<int64_t>(), sh.data_ptr<int64_t>() + sh.numel());
    q->is_signed = is_signed;
    LR_CHECK(q->absmax.numel() == (q->codes.numel() + q->block - 1) / q->block, Corruption,
             "optimizer state for ", name, ": 8-bit ", key, " has ", q->absmax.numel(), " blocks for ",
             q->codes.numel(), " values");
  }
}

}  // namespace lowrank::optim
