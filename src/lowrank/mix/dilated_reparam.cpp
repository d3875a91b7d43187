// The dilated reparam block, its training and deploy forms; see dilated_reparam.h.
#include "lowrank/mix/dilated_reparam.h"

#include "lowrank/core/error.h"
#include "lowrank/mix/mixer_options.h"
#include "lowrank/nn/config.h"

namespace lowrank::mix {

namespace {

struct TableRow {
  int64_t kernel_size;
  std::vector<DilatedBranchSpec> branches;
};

const std::vector<TableRow>& table() {
  // unireplknet.py, DilatedReparamBlock.__init__ ("default settings ... not tuned carefully").
  static const std::vector<TableRow> rows{
      {5, {{3, 1}, {3, 2}}},
      {7, {{5, 1}, {3, 2}, {3, 3}}},
      {9, {{5, 1}, {5, 2}, {3, 3}, {3, 4}}},
      {11, {{5, 1}, {5, 2}, {3, 3}, {3, 4}, {3, 5}}},
      {13, {{5, 1}, {7, 2}, {3, 3}, {3, 4}, {3, 5}}},
      {15, {{5, 1}, {7, 2}, {3, 3}, {3, 5}, {3, 7}}},
      {17, {{5, 1}, {9, 2}, {3, 4}, {3, 5}, {3, 7}}},
  };
  return rows;
}

std::string branch_name(const DilatedBranchSpec& b) {
  return str("dil_k", b.kernel_size, "_", b.dilation);
}

}  // namespace

std::vector<int64_t> dilated_reparam_kernel_sizes() {
  std::vector<int64_t> out;
  for (const TableRow& r : table()) out.push_back(r.kernel_size);
  return out;
}

std::vector<DilatedBranchSpec> dilated_reparam_branches(int64_t kernel_size) {
  std::string known;
  for (const TableRow& r : table()) {
    if (r.kernel_size == kernel_size) return r.branches;
    known += str(known.empty() ? "" : ", ", r.kernel_size);
  }
  throw InvalidArgument(str("dilated_reparam: \"kernel_size\" ", kernel_size,
                            " is not in the dilated-reparam table (supported: ", known, ")"));
}

at::Tensor dilated_to_dense(const at::Tensor& kernel, int64_t dilation) {
  LR_CHECK(kernel.dim() == 4 && dilation >= 1, InvalidArgument,
           "dilated_to_dense: expected a [C, 1, k, k] kernel and dilation >= 1, got ", kernel.sizes(),
           " and ", dilation);
  const int64_t kh = kernel.size(2), kw = kernel.size(3);
  at::Tensor dense = at::zeros(
      {kernel.size(0), kernel.size(1), dilation * (kh - 1) + 1, dilation * (kw - 1) + 1}, kernel.options());
  // Tap (i, j) of the dilated kernel reads the input at offset (r·i, r·j).
  dense.slice(2, 0, dense.size(2), dilation).slice(3, 0, dense.size(3), dilation).copy_(kernel);
  return dense;
}

at::Tensor pad_kernel_to(const at::Tensor& small, int64_t kernel_size) {
  const int64_t k = small.size(2);
  LR_CHECK(small.size(3) == k && kernel_size >= k && (kernel_size - k) % 2 == 0, InvalidArgument,
           "pad_kernel_to: a ", small.size(2), "x", small.size(3), " kernel cannot be centred in ",
           kernel_size, "x", kernel_size);
  const int64_t p = (kernel_size - k) / 2;
  return at::constant_pad_nd(small, {p, p, p, p}, 0);
}

DilatedReparam DilatedReparam::make(const std::string& prefix, int64_t channels, int64_t kernel_size,
                                    bool deploy, const nn::ConvTensorSource& source) {
  const std::vector<DilatedBranchSpec> specs = dilated_reparam_branches(kernel_size);
  DilatedReparam m;
  m.channels = channels;
  m.kernel_size = kernel_size;
  m.deployed = deploy;
  const int64_t K = kernel_size;
  m.lk_weight = source(prefix + ".lk.weight", {channels, 1, K, K}, nn::ParamInit::kNormal, {});
  if (deploy) {
    m.lk_bias = source(prefix + ".lk.bias", {channels}, nn::ParamInit::kZeros, {});
    return m;
  }
  m.lk_norm = nn::BatchNorm::make(prefix + ".lk_norm", channels, source);
  for (const DilatedBranchSpec& b : specs) {
    const std::string p = prefix + "." + branch_name(b);
    Branch branch{
        b, source(p + ".weight", {channels, 1, b.kernel_size, b.kernel_size}, nn::ParamInit::kNormal, {}),
        nn::BatchNorm::make(p + ".norm", channels, source)};
    m.branches.push_back(std::move(branch));
  }
  return m;
}

at::Tensor DilatedReparam::forward(const at::Tensor& x, bool training) const {
  LR_CHECK(x.dim() == 4 && x.size(1) == channels, InvalidArgument, "dilated_reparam: expected [B, ", channels,
           ", H, W], got ", x.sizes());
  const int64_t pad = kernel_size / 2;
  if (deployed) return at::conv2d(x, lk_weight, lk_bias, {1, 1}, {pad, pad}, {1, 1}, channels);
  at::Tensor y =
      lk_norm.forward(at::conv2d(x, lk_weight, {}, {1, 1}, {pad, pad}, {1, 1}, channels), training);
  for (const Branch& b : branches) {
    const int64_t k = b.spec.kernel_size, r = b.spec.dilation;
    const int64_t p = (r * (k - 1) + 1) / 2;
    y = y + b.norm.forward(at::conv2d(x, b.weight, {}, {1, 1}, {p, p}, {r, r}, channels), training);
  }
  return y;
}

std::pair<at::Tensor, at::Tensor> DilatedReparam::merged() const {
  if (deployed) return {lk_weight, lk_bias};
  auto [scale, shift] = lk_norm.eval_affine();
  at::Tensor weight = lk_weight * scale.view({-1, 1, 1, 1});
  at::Tensor bias = shift;
  for (const Branch& b : branches) {
    auto [s, t] = b.norm.eval_affine();
    weight = weight +
             pad_kernel_to(dilated_to_dense(b.weight * s.view({-1, 1, 1, 1}), b.spec.dilation), kernel_size);
    bias = bias + t;
  }
  return {weight, bias};
}

DilatedReparam DilatedReparam::deploy() const {
  DilatedReparam m;
  m.channels = channels;
  m.kernel_size = kernel_size;
  m.deployed = true;
  auto [w, b] = merged();
  m.lk_weight = w.detach().clone();
  m.lk_bias = b.detach().clone();
  return m;
}

void DilatedReparam::append_parameters(const std::string& prefix, nn::NamedTensors& out) const {
  out.emplace_back(prefix + ".lk.weight", lk_weight);
  if (deployed) {
    out.emplace_back(prefix + ".lk.bias", lk_bias);
    return;
  }
  lk_norm.append_parameters(prefix + ".lk_norm", out);
  for (const Branch& b : branches) {
    const std::string p = prefix + "." + branch_name(b.spec);
    out.emplace_back(p + ".weight", b.weight);
    b.norm.append_parameters(p + ".norm", out);
  }
}

void DilatedReparam::append_buffers(const std::string& prefix, nn::NamedTensors& out) const {
  if (deployed) return;
  lk_norm.append_buffers(prefix + ".lk_norm", out);
  for (const Branch& b : branches) b.norm.append_buffers(prefix + "." + branch_name(b.spec) + ".norm", out);
}

namespace {

const OptionHelp kOptions1d = {
    {"kernel_size", "K, the large kernel: 5, 7, 9, 11, 13 (default), 15 or 17 (the reference table)"},
    {"causal",
     "true (default): each output reads only earlier positions (left padding) and the mixer decodes "
     "with step(); false: centred kernels, bidirectional"},
};

// The last K − 1 inputs of each row, oldest first (zeros before the sequence starts).
struct ConvWindowState final : nn::MixerState {
  at::Tensor window;  // [B, K − 1, H]; undefined before the first step
};

}  // namespace

DilatedReparam1dMixer::DilatedReparam1dMixer(const nn::MixerSpec& spec)
    : prefix_(spec.prefix), hidden_(spec.config.hidden_size) {
  check_option_keys("dilated_reparam_1d", spec.options, kOptions1d);
  const Json k = spec.options.value("kernel_size", Json(13));
  LR_CHECK(k.is_number_integer(), InvalidArgument,
           "dilated_reparam_1d: option \"kernel_size\" must be an integer, got ", k.dump());
  kernel_size_ = k.get<int64_t>();
  std::vector<DilatedBranchSpec> specs;
  try {
    specs = dilated_reparam_branches(kernel_size_);
  } catch (const InvalidArgument&) {
    std::string known;
    for (int64_t size : dilated_reparam_kernel_sizes()) known += str(known.empty() ? "" : ", ", size);
    throw InvalidArgument(str("dilated_reparam_1d: option \"kernel_size\" ", kernel_size_,
                              " is not in the dilated-reparam table (supported: ", known, ")"));
  }
  const Json c = spec.options.value("causal", Json(true));
  LR_CHECK(c.is_boolean(), InvalidArgument,
           "dilated_reparam_1d: option \"causal\" must be true or false, got ", c.dump());
  causal_ = c.get<bool>();
  specs.insert(specs.begin(), DilatedBranchSpec{kernel_size_, 1});
  for (size_t i = 0; i < specs.size(); ++i) {
    Branch b;
    b.spec = specs[i];
    b.name = i == 0 ? std::string("lk") : branch_name(specs[i]);
    const std::string p = prefix_ + "." + b.name;
    b.weight = spec.tensor(p + ".weight", {hidden_, specs[i].kernel_size}, nn::ParamInit::kNormal, {});
    b.scale = spec.tensor(p + ".scale", {hidden_}, nn::ParamInit::kOnes, {});
    b.shift = spec.tensor(p + ".shift", {hidden_}, nn::ParamInit::kZeros, {});
    branches_.push_back(std::move(b));
  }
}

at::Tensor DilatedReparam1dMixer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  LR_CHECK(x.dim() == 3 && x.size(2) == hidden_, InvalidArgument, "dilated_reparam_1d: input must be [B, T, ",
           hidden_, "], got ", x.sizes());
  // Padding positions are zero inputs, as the zero padding before the sequence.
  at::Tensor in = context.valid.defined() ? x * context.valid.unsqueeze(-1).to(x.scalar_type()) : x;
  in = in.transpose(1, 2);  // [B, H, T]
  const int64_t T = x.size(1);
  at::Tensor y;
  for (const Branch& b : branches_) {
    const int64_t k = b.spec.kernel_size, r = b.spec.dilation, span = r * (k - 1);
    const at::Tensor padded =
        causal_ ? at::constant_pad_nd(in, {span, 0}, 0) : at::constant_pad_nd(in, {span / 2, span / 2}, 0);
    const at::Tensor conv = at::conv1d(padded, b.weight.unsqueeze(1).to(x.scalar_type()), {},
                                       at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{r}, hidden_);
    const at::Tensor term = conv * b.scale.view({1, -1, 1}) + b.shift.view({1, -1, 1});
    y = y.defined() ? y + term : term;
  }
  TORCH_INTERNAL_ASSERT(y.size(2) == T);
  return y.transpose(1, 2);
}

std::pair<at::Tensor, at::Tensor> DilatedReparam1dMixer::merged() const {
  at::Tensor weight = at::zeros({hidden_, kernel_size_}, branches_[0].weight.options());
  at::Tensor bias = at::zeros({hidden_}, branches_[0].weight.options());
  for (const Branch& b : branches_) {
    const at::Tensor dense =
        dilated_to_dense((b.weight * b.scale.unsqueeze(1)).view({hidden_, 1, 1, -1}), b.spec.dilation)
            .select(2, 0)
            .select(1, 0);  // [H, r(k−1)+1]: the row of a 1×k kernel, dilated
    const int64_t span = dense.size(1), extra = kernel_size_ - span;
    // Causal: the newest tap last (right-aligned); otherwise centred.
    weight =
        weight +
        at::constant_pad_nd(
            dense, causal_ ? std::vector<int64_t>{extra, 0} : std::vector<int64_t>{extra / 2, extra / 2}, 0);
    bias = bias + b.shift;
  }
  return {weight, bias};
}

std::unique_ptr<nn::MixerState> DilatedReparam1dMixer::new_state(int64_t batch) const {
  LR_CHECK(causal_, Unsupported, "dilated_reparam_1d: only a causal mixer decodes with step()");
  (void)batch;  // the first step sizes the window (dtype and device come with it)
  return std::make_unique<ConvWindowState>();
}

at::Tensor DilatedReparam1dMixer::step(const at::Tensor& x, nn::MixerState& state,
                                       const nn::MixerContext& context) const {
  LR_CHECK(causal_, Unsupported, "dilated_reparam_1d: only a causal mixer decodes with step()");
  LR_CHECK(x.dim() == 3 && x.size(1) == 1 && x.size(2) == hidden_, InvalidArgument,
           "dilated_reparam_1d step: one position [B, 1, ", hidden_, "], got ", x.sizes());
  auto& s = dynamic_cast<ConvWindowState&>(state);
  const at::Tensor in = context.valid.defined() ? x * context.valid.view({-1, 1, 1}).to(x.scalar_type()) : x;
  if (!s.window.defined()) s.window = at::zeros({x.size(0), kernel_size_ - 1, hidden_}, x.options());
  const at::Tensor taps = at::cat({s.window, in}, 1);  // [B, K, H], oldest first
  s.window = taps.narrow(1, 1, kernel_size_ - 1).contiguous();
  const auto [weight, bias] = merged();
  const at::Tensor w = weight.to(x.scalar_type()).t();  // [K, H]
  return ((taps * w.unsqueeze(0)).sum(1) + bias.to(x.scalar_type())).unsqueeze(1);
}

nn::NamedTensors DilatedReparam1dMixer::tensors() const {
  nn::NamedTensors out;
  for (const Branch& b : branches_) {
    const std::string p = prefix_ + "." + b.name;
    out.emplace_back(p + ".weight", b.weight);
    out.emplace_back(p + ".scale", b.scale);
    out.emplace_back(p + ".shift", b.shift);
  }
  return out;
}

void register_dilated_reparam_1d(nn::MixerRegistry& registry) {
  registry.add({"dilated_reparam_1d",
                "UniRepLKNet's dilated reparam block over a sequence: a depthwise K-tap conv plus parallel "
                "dilated small ones, each with a per-channel affine (BN's eval form), mergeable into one "
                "K-tap conv; causal by default (decodes with step())",
                "Ding et al., 2024, arXiv:2311.15599", kOptions1d},
               [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
                 return std::make_unique<DilatedReparam1dMixer>(spec);
               });
}

}  // namespace lowrank::mix
