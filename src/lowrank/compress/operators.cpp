// Compressed base operators: construction checks, forward passes, stored tensors.
#include "lowrank/compress/operators.h"

#include <limits>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/nn/shared_input.h"
#include "lowrank/ops/w4a4_gemm.h"

namespace lowrank::compress {

namespace {

void check_bias(const at::Tensor& bias, int64_t out, std::string_view kind) {
  LR_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == out), InvalidArgument, kind,
           " operator: bias of shape ", bias.sizes(), " for ", out, " outputs");
}

void add_bias(nn::NamedTensors& out, const at::Tensor& bias) {
  if (bias.defined()) out.emplace_back("bias", bias);
}

// y + d, in place when no gradient is recorded (y is the operator's own fresh output).
at::Tensor add_into(at::Tensor y, const at::Tensor& d) {
  return at::GradMode::is_enabled() ? y + d : y.add_(d);
}

// U (V x) + b without materialising U V.
void check_act_bits(int act_bits, int bits, std::string_view kind) {
  LR_CHECK(act_bits == 16 || (act_bits == 4 && bits == 4), InvalidArgument, kind, " operator: act_bits ",
           act_bits, " with ", bits, "-bit weights; use 16, or 4 with 4-bit weights");
}

at::Tensor low_rank_forward(const at::Tensor& x, const at::Tensor& u, const at::Tensor& v,
                            const at::Tensor& bias) {
  return at::linear(at::linear(x, v), u, bias);
}

// Q(W) x + b. The packed kernel of small batches has no backward: when a gradient must flow to
// x (an adapter trained below this slot, QLoRA-style) the product runs on the dequantised weight.
at::Tensor quantized_linear(const at::Tensor& x, const ops::GroupQuantized& w, const at::Tensor& bias) {
  if (at::GradMode::is_enabled() && x.requires_grad())
    return at::linear(x, w.dequantize(x.scalar_type()), bias.defined() ? bias.to(x.scalar_type()) : bias);
  return ops::group_quant_linear(x, w, bias);
}

}  // namespace

int64_t StoredOperator::storage_bytes(int64_t float_bytes) const {
  int64_t bytes = 0;
  for (const auto& [name, t] : tensors())
    bytes +=
        t.is_floating_point() ? t.numel() * float_bytes : t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

// ---- lowrank

LowRankOperator::LowRankOperator(at::Tensor u, at::Tensor v, at::Tensor bias)
    : u_(std::move(u)), v_(std::move(v)), bias_(std::move(bias)) {
  LR_CHECK(u_.dim() == 2 && v_.dim() == 2 && u_.size(1) == v_.size(0) && u_.size(1) > 0, InvalidArgument,
           "lowrank operator: U ", u_.sizes(), " and V ", v_.sizes(), " do not chain");
  check_bias(bias_, u_.size(0), "lowrank");
}

at::Tensor LowRankOperator::forward(const at::Tensor& x) const {
  return low_rank_forward(x, u_, v_, bias_);
}

nn::NamedTensors LowRankOperator::tensors() const {
  nn::NamedTensors out{{"lowrank_u", u_}, {"lowrank_v", v_}};
  add_bias(out, bias_);
  return out;
}

OrderedJson LowRankOperator::describe() const {
  OrderedJson d{{"kind", "lowrank"}, {"rank", rank()}};
  if (bias_.defined()) d["bias"] = true;
  return d;
}

// ---- quantized

QuantizedOperator::QuantizedOperator(ops::GroupQuantized weight, at::Tensor bias, int act_bits)
    : weight_(std::move(weight)), bias_(std::move(bias)), act_bits_(act_bits) {
  check_bias(bias_, weight_.out_features, "quantized");
  check_act_bits(act_bits_, weight_.bits, "quantized");
}

at::Tensor QuantizedOperator::forward(const at::Tensor& x) const {
  if (act_bits_ == 4) return ops::w4a4_linear(x, weight_, bias_);
  return quantized_linear(x, weight_, bias_);
}

bool QuantizedOperator::has_row_product() const {
  return act_bits_ == 16 && weight_.packed.device().is_cpu() && weight_.packed.is_contiguous() &&
         weight_.scales.is_contiguous() && weight_.scales.scalar_type() == at::kFloat &&
         (!bias_.defined() || (bias_.scalar_type() == at::kFloat && bias_.is_contiguous()));
}

void QuantizedOperator::row_product(const float* x, int64_t begin, int64_t end, float* y) const {
  ops::group_quant_row_product(weight_, x, bias_.defined() ? bias_.const_data_ptr<float>() : nullptr, begin,
                               end, y);
}

nn::NamedTensors QuantizedOperator::tensors() const {
  nn::NamedTensors out{{"qweight", weight_.packed}, {"scales", weight_.scales}};
  add_bias(out, bias_);
  return out;
}

at::Tensor QuantizedOperator::dense_weight() const {
  const at::ScalarType dtype = bias_.defined() ? bias_.scalar_type() : at::kFloat;
  return weight_.dequantize(dtype);
}

OrderedJson QuantizedOperator::describe() const {
  OrderedJson d{{"kind", "quantized"}, {"bits", weight_.bits}, {"group_size", weight_.group_size}};
  if (act_bits_ != 16) d["act_bits"] = act_bits_;  // absent: 16, as directories written before it
  return d;
}

// ---- lowrank_quantized

QuantizedLowRankOperator::QuantizedLowRankOperator(ops::GroupQuantized ut, ops::GroupQuantized v,
                                                   at::Tensor bias)
    : ut_(std::move(ut)), v_(std::move(v)), bias_(std::move(bias)) {
  LR_CHECK(ut_.out_features == v_.out_features && v_.out_features > 0, InvalidArgument,
           "lowrank_quantized operator: Uᵀ has rank ", ut_.out_features, " and V rank ", v_.out_features);
  check_bias(bias_, ut_.in_features, "lowrank_quantized");
}

std::shared_ptr<QuantizedLowRankOperator> QuantizedLowRankOperator::quantize(const LowRankOperator& factored,
                                                                             int bits, int64_t group_size) {
  const int64_t out = factored.out_features(), in = factored.in_features();
  LR_CHECK(group_size > 0 && in % group_size == 0 && out % group_size == 0, InvalidArgument,
           "quantising a factored [", out, ", ", in, "] slot: --group-size ", group_size,
           " must divide both its inputs (V's groups) and its outputs (Uᵀ's groups)");
  const at::Tensor u = factored.u().detach().to(at::kCPU, at::kFloat);
  const at::Tensor v = factored.v().detach().to(at::kCPU, at::kFloat);
  const at::Device device = factored.u().device();
  return std::make_shared<QuantizedLowRankOperator>(
      ops::quantize_groups(u.t().contiguous(), bits, group_size).to(device),
      ops::quantize_groups(v.contiguous(), bits, group_size).to(device), factored.bias());
}

at::Tensor QuantizedLowRankOperator::forward(const at::Tensor& x) const {
  const at::Tensor h = quantized_linear(x, v_, {});
  const at::Tensor y = at::matmul(h, ut_.dequantize(h.scalar_type()));
  return bias_.defined() ? add_into(y, bias_.to(y.scalar_type())) : y;
}

nn::NamedTensors QuantizedLowRankOperator::tensors() const {
  nn::NamedTensors out{{"lowrank_ut_qweight", ut_.packed},
                       {"lowrank_ut_scales", ut_.scales},
                       {"lowrank_v_qweight", v_.packed},
                       {"lowrank_v_scales", v_.scales}};
  add_bias(out, bias_);
  return out;
}

at::Tensor QuantizedLowRankOperator::dense_weight() const {
  return at::matmul(ut_.dequantize(at::kFloat).t(), v_.dequantize(at::kFloat));
}

OrderedJson QuantizedLowRankOperator::describe() const {
  return {{"kind", "lowrank_quantized"}, {"rank", rank()}, {"bits", v_.bits}, {"group_size", v_.group_size}};
}

// ---- svdquant

SvdQuantOperator::SvdQuantOperator(at::Tensor smooth, at::Tensor lora_up, at::Tensor lora_down,
                                   ops::GroupQuantized residual, at::Tensor bias, int act_bits)
    : smooth_(std::move(smooth)),
      lora_up_(std::move(lora_up)),
      lora_down_(std::move(lora_down)),
      residual_(std::move(residual)),
      bias_(std::move(bias)),
      act_bits_(act_bits) {
  const int64_t out = residual_.out_features, in = residual_.in_features;
  LR_CHECK(smooth_.dim() == 1 && smooth_.size(0) == in, InvalidArgument,
           "svdquant operator: smoothing factors of shape ", smooth_.sizes(), " for ", in, " inputs");
  LR_CHECK(lora_up_.dim() == 2 && lora_down_.dim() == 2 && lora_up_.size(0) == out &&
               lora_down_.size(1) == in && lora_up_.size(1) == lora_down_.size(0),
           InvalidArgument, "svdquant operator: branch L1 ", lora_up_.sizes(), " and L2 ", lora_down_.sizes(),
           " do not fit a [", out, ", ", in, "] weight");
  LR_CHECK(at::all(smooth_ > 0).item<bool>(), InvalidArgument,
           "svdquant operator: smoothing factors must be > 0");
  check_bias(bias_, out, "svdquant");
  check_act_bits(act_bits_, residual_.bits, "svdquant");
  inv_smooth_ = at::reciprocal(smooth_);
  if (act_bits_ == 4) {
    inv_smooth_f32_ = inv_smooth_.to(at::kFloat).contiguous();
    lora_up_f32_ = lora_up_.to(at::kFloat).contiguous();
    lora_down_f32_ = lora_down_.to(at::kFloat).contiguous();
    if (bias_.defined()) bias_f32_ = bias_.to(at::kFloat).contiguous();
  }
}

// One pass over x: x̂ = x ⊘ λ, Q(x̂) and x̂ L2ᵀ (ops::quantize_activations_int4), shared between the
// slots of one branch like the W4A16 path's x̂ and x̂ L2ᵀ; then the integer product and L1.
at::Tensor SvdQuantOperator::forward_w4a4(const at::Tensor& x) const {
  const bool branch = rank() > 0;
  if (!x.device().is_cpu()) {  // no integer kernel there: the same quantisation in ATen operations
    at::Tensor y = ops::w4a4_linear(x, residual_, bias_, inv_smooth_);
    return branch ? add_into(std::move(y), at::linear(at::linear(x * inv_smooth_, lora_down_), lora_up_)) : y;
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features();
  nn::SharedInputScope* scope = nn::SharedInputScope::for_input(x);
  const nn::SharedInputScope::Key key{smooth_.const_data_ptr(), lora_down_.const_data_ptr()};
  const std::vector<at::Tensor>* shared = scope ? scope->find(key) : nullptr;
  ops::Int4Activations a;
  a.group_size = residual_.group_size;
  if (shared != nullptr && shared->size() == 4) {
    a.values = (*shared)[0];
    a.scales = (*shared)[1];
    a.group_sums = (*shared)[2];
    a.lora_act = (*shared)[3];
  } else {
    const at::Tensor x2 = x.reshape({-1, in_features()}).to(at::kFloat).contiguous();
    a = ops::quantize_activations_int4(x2, residual_.group_size, inv_smooth_f32_,
                                       branch ? lora_down_f32_ : at::Tensor());
    if (scope) scope->put(key, {a.values, a.scales, a.group_sums, a.lora_act});
  }
  at::Tensor y = ops::w4a4_gemm(a, residual_, bias_f32_);
  if (branch) y.add_(at::linear(a.lora_act, lora_up_f32_));
  return y.reshape(shape).to(x.scalar_type());
}

at::Tensor SvdQuantOperator::forward(const at::Tensor& x) const {
  if (act_bits_ == 4) return forward_w4a4(x);
  // x̂ = x/λ and x̂ L2ᵀ depend only on x, λ and L2: slots of a shared branch (q, k, v; gate, up),
  // whose λ and L2 are one tensor each, compute them once per input (nn/shared_input.h).
  nn::SharedInputScope* scope = nn::SharedInputScope::for_input(x);
  const nn::SharedInputScope::Key key{smooth_.const_data_ptr(), lora_down_.const_data_ptr()};
  at::Tensor xs, h;
  const std::vector<at::Tensor>* shared = scope ? scope->find(key) : nullptr;
  if (shared != nullptr && shared->size() == 2 && (*shared)[1].size(-1) == rank()) {
    xs = (*shared)[0];
    h = (*shared)[1];
  } else {
    xs = x * inv_smooth_;
    h = at::linear(xs, lora_down_);
    if (scope) scope->put(key, {xs, h});
  }
  // The residual GEMM writes the output the branch adds to.
  at::Tensor y = ops::group_quant_linear(xs, residual_, bias_);
  return add_into(std::move(y), at::linear(h, lora_up_));
}

std::shared_ptr<SvdQuantOperator> SvdQuantOperator::sharing_branch_input(
    const SvdQuantOperator& other) const {
  if (!smooth_.equal(other.smooth_) || lora_down_.sizes() != other.lora_down_.sizes() ||
      !lora_down_.equal(other.lora_down_))
    return nullptr;
  return std::make_shared<SvdQuantOperator>(other.smooth_, lora_up_, other.lora_down_, residual_, bias_,
                                            act_bits_);
}

nn::NamedTensors SvdQuantOperator::tensors() const {
  nn::NamedTensors out{{"smooth", smooth_},
                       {"lora_up", lora_up_},
                       {"lora_down", lora_down_},
                       {"qweight", residual_.packed},
                       {"scales", residual_.scales}};
  add_bias(out, bias_);
  return out;
}

at::Tensor SvdQuantOperator::dense_weight() const {
  const at::Tensor w_hat = at::matmul(lora_up_, lora_down_) + residual_.dequantize(lora_up_.scalar_type());
  return w_hat * inv_smooth_;  // Ŵ diag(λ)⁻¹
}

OrderedJson SvdQuantOperator::describe() const {
  OrderedJson d{
      {"kind", "svdquant"}, {"rank", rank()}, {"bits", residual_.bits}, {"group_size", residual_.group_size}};
  if (act_bits_ != 16) d["act_bits"] = act_bits_;  // absent: 16, as directories written before it
  return d;
}

// ---- sparse24

std::shared_ptr<Sparse24Operator> Sparse24Operator::from_dense(const at::Tensor& weight, at::Tensor bias) {
  LR_CHECK(weight.dim() == 2 && weight.size(1) % 4 == 0, InvalidArgument,
           "2:4 sparsity needs a 2-D weight whose input size is a multiple of 4, got ", weight.sizes());
  const int64_t out = weight.size(0), in = weight.size(1);
  const at::Tensor groups = weight.detach().reshape({out, in / 4, 4});
  LR_CHECK((groups != 0).sum(-1).le(2).all().item<bool>(), InvalidArgument,
           "2:4 sparsity: a group of four weights holds more than two nonzeros");
  // The two kept positions: the nonzeros first (stable), in increasing position order.
  const at::Tensor order = at::argsort((groups == 0).to(at::kInt), /*stable=*/true, -1, false);
  const at::Tensor kept = std::get<0>(at::sort(order.narrow(-1, 0, 2), -1));  // [out, in/4, 2]
  const at::Tensor values = at::gather(groups, -1, kept).reshape({out, in / 2}).contiguous();
  const at::Tensor packed = (kept.select(-1, 0) + kept.select(-1, 1) * 4).to(at::kByte).contiguous();
  return std::make_shared<Sparse24Operator>(values, packed, std::move(bias));
}

Sparse24Operator::Sparse24Operator(at::Tensor values, at::Tensor indices, at::Tensor bias)
    : values_(std::move(values)), indices_(std::move(indices)), bias_(std::move(bias)) {
  LR_CHECK(values_.dim() == 2 && indices_.dim() == 2 && indices_.scalar_type() == at::kByte &&
               values_.size(0) == indices_.size(0) && values_.size(1) == 2 * indices_.size(1),
           Corruption, "sparse24 operator: values ", values_.sizes(), " and indices ", indices_.sizes(), " (",
           c10::toString(indices_.scalar_type()), ") do not form a 2:4 weight");
  const int64_t out = values_.size(0), groups = indices_.size(1);
  const at::Tensor idx = indices_.to(at::kLong);
  const at::Tensor first = idx.remainder(4), second = idx.div(4, "floor");
  LR_CHECK(idx.lt(16).all().item<bool>() && first.ne(second).all().item<bool>(), Corruption,
           "sparse24 operator: index bytes outside the 2:4 pattern");
  dense_ = at::zeros({out, groups, 4}, values_.options());
  const at::Tensor v = values_.reshape({out, groups, 2});
  dense_.scatter_(-1, at::stack({first, second}, -1), v);
  dense_ = dense_.reshape({out, groups * 4});
  check_bias(bias_, out, "sparse24");
}

nn::NamedTensors Sparse24Operator::tensors() const {
  nn::NamedTensors out{{"sparse24_values", values_}, {"sparse24_indices", indices_}};
  add_bias(out, bias_);
  return out;
}

OrderedJson Sparse24Operator::describe() const {
  return {{"kind", "sparse24"}};
}

// ---- sparse_lowrank

SparseLowRankOperator::SparseLowRankOperator(at::Tensor u, at::Tensor v, at::Tensor row_offsets,
                                             at::Tensor col_indices, at::Tensor sparse_values,
                                             at::Tensor bias)
    : u_(std::move(u)),
      v_(std::move(v)),
      row_offsets_(std::move(row_offsets)),
      col_indices_(std::move(col_indices)),
      values_(std::move(sparse_values)),
      bias_(std::move(bias)) {
  LR_CHECK(u_.dim() == 2 && v_.dim() == 2 && u_.size(1) == v_.size(0), InvalidArgument,
           "sparse_lowrank operator: U ", u_.sizes(), " and V ", v_.sizes(), " do not chain");
  const int64_t out = u_.size(0), in = v_.size(1);
  LR_CHECK(row_offsets_.dim() == 1 && row_offsets_.size(0) == out + 1 &&
               row_offsets_.scalar_type() == at::kLong && col_indices_.dim() == 1 &&
               col_indices_.scalar_type() == at::kInt && values_.dim() == 1 &&
               col_indices_.size(0) == values_.size(0),
           Corruption, "sparse_lowrank operator: row offsets ", row_offsets_.sizes(), " (",
           c10::toString(row_offsets_.scalar_type()), "), column indices ", col_indices_.sizes(), " (",
           c10::toString(col_indices_.scalar_type()), ") and values ", values_.sizes(),
           " are not the int64/int32 CSR of a [", out, ", ", in, "] matrix");
  const int64_t nnz = values_.numel();
  LR_CHECK(row_offsets_[0].item<int64_t>() == 0 && row_offsets_[out].item<int64_t>() == nnz &&
               (row_offsets_.slice(0, 1) >= row_offsets_.slice(0, 0, -1)).all().item<bool>(),
           Corruption, "sparse_lowrank operator: row offsets must rise from 0 to the ", nnz, " nonzeros");
  const at::Tensor cols = col_indices_.to(at::kLong);
  const at::Tensor rows = at::repeat_interleave(at::arange(out, at::kLong), row_offsets_.diff());
  if (nnz > 0) {
    LR_CHECK(cols.min().item<int64_t>() >= 0 && cols.max().item<int64_t>() < in, Corruption,
             "sparse_lowrank operator: a column index lies outside [0, ", in, ")");
    const at::Tensor flat = rows * in + cols;
    LR_CHECK(nnz < 2 || (flat.slice(0, 1) > flat.slice(0, 0, -1)).all().item<bool>(), Corruption,
             "sparse_lowrank operator: column indices must be strictly increasing within each row");
  }
  check_bias(bias_, out, "sparse_lowrank");
  csr_ =
      at::sparse_csr_tensor(row_offsets_, cols, values_, {out, in}, values_.options().layout(at::kSparseCsr));
}

std::shared_ptr<SparseLowRankOperator> SparseLowRankOperator::from_dense_sparse(at::Tensor u, at::Tensor v,
                                                                                const at::Tensor& sparse,
                                                                                at::Tensor bias) {
  LR_CHECK(sparse.dim() == 2, InvalidArgument, "sparse_lowrank operator: S must be 2-D, not ",
           sparse.sizes());
  LR_CHECK(sparse.size(1) <= std::numeric_limits<int32_t>::max(), InvalidArgument,
           "sparse_lowrank operator: ", sparse.size(1), " columns do not fit int32 column indices");
  const at::Tensor csr = sparse.to_sparse_csr();
  return std::make_shared<SparseLowRankOperator>(
      std::move(u), std::move(v), csr.crow_indices().to(at::kLong).contiguous(),
      csr.col_indices().to(at::kInt).contiguous(), csr.values().contiguous(), std::move(bias));
}

at::Tensor SparseLowRankOperator::forward(const at::Tensor& x) const {
  const at::Tensor x2 = x.reshape({-1, x.size(-1)});
  // S x for every row of x: (S x2ᵀ)ᵀ with the CSR matrix on the left.
  const at::Tensor sparse = at::mm(csr_, x2.t()).t();
  at::Tensor y = low_rank_forward(x2, u_, v_, bias_) + sparse;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features();
  return y.reshape(shape);
}

nn::NamedTensors SparseLowRankOperator::tensors() const {
  nn::NamedTensors out{{"lowrank_u", u_},
                       {"lowrank_v", v_},
                       {"sparse_row_offsets", row_offsets_},
                       {"sparse_col_indices", col_indices_},
                       {"sparse_values", values_}};
  add_bias(out, bias_);
  return out;
}

at::Tensor SparseLowRankOperator::dense_weight() const {
  return at::matmul(u_, v_) + csr_.to_dense();
}

OrderedJson SparseLowRankOperator::describe() const {
  return {{"kind", "sparse_lowrank"}, {"rank", rank()}, {"nonzeros", nonzeros()}, {"sparse_format", "csr"}};
}

// ---- compensated

CompensatedOperator::CompensatedOperator(std::shared_ptr<const StoredOperator> inner, at::Tensor a,
                                         at::Tensor b, std::string method)
    : inner_(std::move(inner)), a_(std::move(a)), b_(std::move(b)), method_(std::move(method)) {
  LR_CHECK(inner_ != nullptr, InvalidArgument, "compensated operator without a base");
  LR_CHECK(inner_->kind() != "compensated", InvalidArgument,
           "compensated operator: the base is already compensated");
  LR_CHECK(a_.dim() == 2 && b_.dim() == 2 && a_.size(0) == b_.size(1) &&
               a_.size(1) == inner_->in_features() && b_.size(0) == inner_->out_features(),
           InvalidArgument, "compensated operator: A ", a_.sizes(), " and B ", b_.sizes(), " do not fit a [",
           inner_->out_features(), ", ", inner_->in_features(), "] base");
}

at::Tensor CompensatedOperator::forward(const at::Tensor& x) const {
  return add_into(inner_->forward(x), at::linear(at::linear(x, a_), b_));
}

nn::NamedTensors CompensatedOperator::tensors() const {
  nn::NamedTensors out = inner_->tensors();
  out.emplace_back("compensation_a", a_);
  out.emplace_back("compensation_b", b_);
  return out;
}

OrderedJson CompensatedOperator::describe() const {
  return {{"kind", "compensated"}, {"method", method_}, {"rank", rank()}, {"base", inner_->describe()}};
}

}  // namespace lowrank::compress
