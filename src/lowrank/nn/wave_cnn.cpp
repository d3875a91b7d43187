// The wave-equation encoder–decoder (wave_cnn.h).
#include "lowrank/nn/wave_cnn.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <map>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

void WaveCnnConfig::check() const {
  LR_CHECK(width >= 1, InvalidArgument, "wave_cnn: width ", width, " must be >= 1");
  LR_CHECK(levels >= 1, InvalidArgument, "wave_cnn: levels ", levels, " must be >= 1");
  LR_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, InvalidArgument, "wave_cnn: kernel_size ", kernel_size,
           " must be odd and positive");
  LR_CHECK(conv == "dense" || conv == "cp", InvalidArgument, "wave_cnn: conv \"", conv,
           "\" is not one of dense, cp");
  LR_CHECK(conv != "cp" || rank >= 1, InvalidArgument, "wave_cnn: conv cp needs a rank >= 1, got ", rank);
  for (double s : input_scale)
    LR_CHECK(std::isfinite(s) && s > 0, InvalidArgument, "wave_cnn: input_scale ", s, " must be positive");
  LR_CHECK(std::isfinite(output_scale) && output_scale > 0, InvalidArgument, "wave_cnn: output_scale ",
           output_scale, " must be positive");
}

void WaveCnnConfig::set_conv(const std::string& spec) {
  if (spec == "dense") {
    conv = "dense";
    rank = 0;
    return;
  }
  LR_CHECK(spec.rfind("cp:", 0) == 0 && spec.size() > 3 &&
               spec.find_first_not_of("0123456789", 3) == std::string::npos,
           InvalidArgument, "--conv ", spec, ": expected dense or cp:R (R a positive integer)");
  conv = "cp";
  rank = std::stoll(spec.substr(3));
  LR_CHECK(rank >= 1, InvalidArgument, "--conv ", spec, ": the rank must be >= 1");
}

OrderedJson WaveCnnConfig::to_json() const {
  OrderedJson j;
  j["model_type"] = "wave_cnn";
  j["width"] = width;
  j["levels"] = levels;
  j["kernel_size"] = kernel_size;
  j["conv"] = conv;
  j["rank"] = rank;
  j["input_scale"] = std::vector<double>(input_scale.begin(), input_scale.end());
  j["output_scale"] = output_scale;
  for (const auto& [key, value] : raw.items())
    if (!j.contains(key)) j[key] = value;
  return j;
}

WaveCnnConfig WaveCnnConfig::from_json(const Json& j, const std::string& what) {
  LR_CHECK(j.is_object(), InvalidArgument, what, ": not a JSON object");
  const std::string type = json_get<std::string>(j, "model_type", what);
  LR_CHECK(type == "wave_cnn", InvalidArgument, what, ": model_type \"", type, "\" is not wave_cnn");
  WaveCnnConfig c;
  c.raw = j;
  c.width = json_get_or<int64_t>(j, "width", c.width, what);
  c.levels = json_get_or<int64_t>(j, "levels", c.levels, what);
  c.kernel_size = json_get_or<int64_t>(j, "kernel_size", c.kernel_size, what);
  c.conv = json_get_or<std::string>(j, "conv", c.conv, what);
  c.rank = json_get_or<int64_t>(j, "rank", 0, what);
  const std::vector<double> in = json_get_or<std::vector<double>>(j, "input_scale", {1, 1, 1}, what);
  LR_CHECK(in.size() == 3, InvalidArgument, what, ": input_scale needs 3 values, got ", in.size());
  c.input_scale = {in[0], in[1], in[2]};
  c.output_scale = json_get_or<double>(j, "output_scale", 1.0, what);
  try {
    c.check();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(str(what, ": ", e.what()));
  }
  return c;
}

at::Tensor WaveConv::forward(const at::Tensor& x) const {
  if (cp) return cp->forward(x);
  return at::conv2d(x, weight, bias, 1, weight.size(2) / 2);
}

at::Tensor WaveConv::kernel() const {
  return cp ? cp->kernel() : weight;
}

int64_t WaveConv::parameter_count() const {
  return cp ? cp->parameter_count() : weight.numel() + (bias.defined() ? bias.numel() : 0);
}

void WaveConv::append(std::vector<std::pair<std::string, at::Tensor>>& out, const std::string& prefix) const {
  if (cp) {
    out.emplace_back(prefix + ".a", cp->a);
    out.emplace_back(prefix + ".b", cp->b);
    out.emplace_back(prefix + ".c", cp->c);
    out.emplace_back(prefix + ".d", cp->d);
    out.emplace_back(prefix + ".bias", cp->bias);
  } else {
    out.emplace_back(prefix + ".weight", weight);
    out.emplace_back(prefix + ".bias", bias);
  }
}

namespace {

int64_t level_width(const WaveCnnConfig& c, int64_t level) {
  return level == 0 ? c.width : 2 * c.width;
}

// nn.Conv2d's default initialisation: weight and bias U(±1/√fan_in) (kaiming_uniform_ with a = √5
// gives bound √(6/((1 + a²)·fan_in)) = 1/√fan_in).
WaveConv dense_conv(int64_t in, int64_t out, int64_t k, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in * k * k));
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  WaveConv conv;
  conv.weight = ((at::rand({out, in, k, k}, gen, opts) * 2 - 1) * bound).to(at::kFloat);
  conv.bias = ((at::rand({out}, gen, opts) * 2 - 1) * bound).to(at::kFloat);
  return conv;
}

}  // namespace

WaveCnn WaveCnn::random(const WaveCnnConfig& config, uint64_t seed) {
  config.check();
  WaveCnn m;
  m.config_ = config;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t k = config.kernel_size;
  uint64_t cp_seed = seed * 1000003ULL + 17;
  auto inner = [&](int64_t in, int64_t out) {
    if (config.conv == "dense") return dense_conv(in, out, k, gen);
    WaveConv conv;
    conv.cp = CpConv2d::random(in, out, k, config.rank, cp_seed++);
    return conv;
  };
  m.stem_ = dense_conv(3, config.width, k, gen);
  for (int64_t l = 1; l <= config.levels; ++l)
    m.encoder_.push_back(inner(level_width(config, l - 1), level_width(config, l)));
  for (int64_t l = 1; l <= config.levels; ++l)
    m.decoder_.push_back(inner(level_width(config, l), level_width(config, l - 1)));
  m.head_ = dense_conv(config.width, 1, k, gen);
  return m;
}

std::vector<std::pair<std::string, at::Tensor>> WaveCnn::named_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  stem_.append(out, "stem");
  for (size_t l = 0; l < encoder_.size(); ++l) encoder_[l].append(out, "encoder." + std::to_string(l));
  for (size_t l = 0; l < decoder_.size(); ++l) decoder_[l].append(out, "decoder." + std::to_string(l));
  head_.append(out, "head");
  return out;
}

void WaveCnn::requires_grad(bool on) {
  for (auto& [name, t] : named_tensors()) t.requires_grad_(on);
}

int64_t WaveCnn::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_tensors()) n += t.numel();
  return n;
}

int64_t WaveCnn::inner_parameter_count() const {
  int64_t n = 0;
  for (const WaveConv& c : encoder_) n += c.parameter_count();
  for (const WaveConv& c : decoder_) n += c.parameter_count();
  return n;
}

void WaveCnn::set_scales(const std::array<double, 3>& input_scale, double output_scale) {
  config_.input_scale = input_scale;
  config_.output_scale = output_scale;
  config_.check();
}

at::Tensor WaveCnn::forward(const at::Tensor& x) const {
  const int64_t n_div = int64_t{1} << config_.levels;
  LR_CHECK(x.dim() == 4 && x.size(1) == 3, InvalidArgument,
           "wave_cnn expects inputs [N, 3, n, n] (u^{t-1}, u^t, c), got ", x.sizes());
  LR_CHECK(x.size(2) % n_div == 0 && x.size(3) % n_div == 0, InvalidArgument, "wave_cnn: a grid of ",
           x.size(2), "x", x.size(3), " is not divisible by 2^levels = ", n_div);
  const at::Tensor scale =
      at::tensor(std::vector<double>(config_.input_scale.begin(), config_.input_scale.end()), x.options())
          .reshape({1, 3, 1, 1});
  std::vector<at::Tensor> e = {at::gelu(stem_.forward(x / scale))};
  for (const WaveConv& conv : encoder_) e.push_back(at::gelu(conv.forward(at::avg_pool2d(e.back(), 2))));
  at::Tensor d = e.back();
  for (int64_t l = config_.levels; l >= 1; --l) {
    const at::Tensor up = at::upsample_nearest2d(
        decoder_[static_cast<size_t>(l - 1)].forward(d),
        {e[static_cast<size_t>(l - 1)].size(2), e[static_cast<size_t>(l - 1)].size(3)});
    d = at::gelu(up + e[static_cast<size_t>(l - 1)]);
  }
  return x.narrow(1, 1, 1) + head_.forward(d) * config_.output_scale;
}

WaveCnn WaveCnn::materialized() const {
  WaveCnn m = *this;
  auto dense = [](WaveConv& c) {
    if (!c.cp) return;
    c.weight = c.cp->kernel();
    c.bias = c.cp->bias;
    c.cp.reset();
  };
  for (WaveConv& c : m.encoder_) dense(c);
  for (WaveConv& c : m.decoder_) dense(c);
  m.config_.conv = "dense";
  m.config_.rank = 0;
  return m;
}

WaveCnn WaveCnn::posthoc_cp(const WaveCnn& dense, int64_t rank, std::vector<double>* errors,
                            int64_t max_iters) {
  LR_CHECK(dense.config_.conv == "dense", InvalidArgument,
           "post-hoc CP needs a dense wave_cnn, this one is already conv cp:", dense.config_.rank);
  LR_CHECK(rank >= 1, InvalidArgument, "post-hoc CP: rank ", rank, " must be >= 1");
  WaveCnn m;
  m.config_ = dense.config_;
  m.config_.conv = "cp";
  m.config_.rank = rank;
  m.stem_ = dense.stem_;
  m.head_ = dense.head_;
  std::vector<double> errs;
  auto decompose = [&](const WaveConv& c) {
    WaveConv out;
    double error = 0;
    out.cp = CpConv2d::from_kernel(c.weight.detach(), c.bias.detach(), rank, &error, max_iters);
    errs.push_back(error);
    return out;
  };
  for (const WaveConv& c : dense.encoder_) m.encoder_.push_back(decompose(c));
  for (const WaveConv& c : dense.decoder_) m.decoder_.push_back(decompose(c));
  m.config_.raw["compression"] = Json{{"method", "cp_als"}, {"rank", rank}, {"kernel_errors", errs}};
  if (errors) *errors = errs;
  return m;
}

void WaveCnn::save(const fs::path& dir) const {
  StagedDirectory staged(dir);
  std::vector<NamedTensor> tensors;
  for (const auto& [name, t] : named_tensors())
    tensors.push_back({name, t.detach().to(at::kFloat).contiguous()});
  save_safetensors(staged.path() / "model.safetensors", tensors, {{"format", "pt"}});
  write_json_file(staged.path() / "wave_config.json", config_.to_json());
  staged.commit();
}

WaveCnn WaveCnn::load(const fs::path& dir) {
  const fs::path config_path = dir / "wave_config.json";
  LR_CHECK(fs::exists(config_path), NotFound, dir.string(),
           " is not a wave model directory (no wave_config.json)");
  const WaveCnnConfig config = WaveCnnConfig::from_json(read_json_file(config_path), config_path.string());
  // A model of this config, whose tensors then come from the file, each checked against its shape.
  WaveCnn m = random(config, 0);
  const fs::path weights_path = dir / "model.safetensors";
  const SafetensorsFile file = SafetensorsFile::open(weights_path);
  std::map<std::string, bool> known;
  for (auto& [name, t] : m.named_tensors()) {
    LR_CHECK(file.contains(name), NotFound, weights_path.string(), ": no tensor ", name);
    const at::Tensor saved = file.load(name, at::kFloat);
    LR_CHECK(saved.sizes() == t.sizes(), Corruption, weights_path.string(), ": tensor ", name, " has shape ",
             saved.sizes(), ", expected ", t.sizes(), " (", config_path.string(), ")");
    t.copy_(saved);
    known[name] = true;
  }
  for (const TensorInfo& info : file.tensors())
    LR_CHECK(known.count(info.name) != 0, Corruption, weights_path.string(), ": unknown tensor ", info.name,
             " for a wave_cnn of conv ", config.conv);
  return m;
}

std::pair<std::array<double, 3>, double> wave_scales(const at::Tensor& inputs, const at::Tensor& targets) {
  LR_CHECK(inputs.dim() == 4 && inputs.size(1) == 3 && targets.dim() == 4 && targets.size(1) == 1 &&
               inputs.size(0) == targets.size(0) && inputs.size(0) >= 1,
           InvalidArgument, "wave data: inputs [N, 3, n, n] and targets [N, 1, n, n] expected, got ",
           inputs.sizes(), " and ", targets.sizes());
  auto rms = [](const at::Tensor& t) {
    return std::max(1e-12, t.to(at::kDouble).square().mean().sqrt().item<double>());
  };
  std::array<double, 3> in{};
  for (int64_t c = 0; c < 3; ++c) in[static_cast<size_t>(c)] = rms(inputs.select(1, c));
  return {in, rms(targets - inputs.narrow(1, 1, 1))};
}

}  // namespace lowrank::nn
