// The equivariance study's classifier (lie_group_classifier.h).
#include "lowrank/nn/lie_group_classifier.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/weight_decay_groups.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

namespace {

constexpr const char* kModelType = "lie_group_classifier";
constexpr const char* kArchitecture = "LieGroupClassifier";

// Parameters of the plain CNN of `c`'s layout with `channels` channels.
int64_t cnn_parameters(const LieGroupClassifierConfig& c, int64_t channels) {
  const int64_t k2 = c.kernel_size * c.kernel_size;
  return channels * c.num_channels * k2 + channels * channels * k2 + 4 * channels + c.num_labels * channels +
         c.num_labels;
}

// Normalises each sample over all its features (channels, elements, positions: GroupNorm with one
// group), eps 1e-6, then a per-channel weight and bias.
at::Tensor channel_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1), dims;
  shape[1] = -1;
  for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
  const at::Tensor mean = x.mean(dims, true);
  const at::Tensor var = (x - mean).square().mean(dims, true);
  return (x - mean) * at::rsqrt(var + 1e-6) * weight.view(shape) + bias.view(shape);
}

}  // namespace

void LieGroupClassifierConfig::check() const {
  LR_CHECK(group == "gl2" || group == "sl2" || group == "none", InvalidArgument, "group \"", group,
           "\" is not one of gl2, sl2, none");
  LR_CHECK(image_height >= 2 && image_width >= 2 && num_channels >= 1 && num_labels >= 2, InvalidArgument,
           "image_size ", image_height, "x", image_width, ", num_channels ", num_channels, " and num_labels ",
           num_labels, " must be >= 2, 2, 1 and 2");
  LR_CHECK(channels >= 1 && kernel_hidden >= 1, InvalidArgument, "channels (", channels,
           ") and kernel_hidden (", kernel_hidden, ") must be >= 1");
  LR_CHECK(kernel_size >= 3 && kernel_size % 2 == 1, InvalidArgument, "kernel_size ", kernel_size,
           " must be odd and at least 3");
  LR_CHECK(train_samples >= 1 && eval_samples >= 1, InvalidArgument, "train_samples (", train_samples,
           ") and eval_samples (", eval_samples, ") must be >= 1");
  LR_CHECK(rotations >= 1 && train_samples % rotations == 0 && eval_samples % rotations == 0, InvalidArgument,
           "rotations (", rotations, ") must be >= 1 and divide train_samples (", train_samples,
           ") and eval_samples (", eval_samples, ")");
  LR_CHECK(rotations % 2 == 1 || rotations == 2 || rotations == 4, InvalidArgument, "rotations (", rotations,
           ") must be odd, 2 or 4: other even counts put relative rotations by π on the chart's cut, where "
           "rounding picks θ = π or −π");
  LR_CHECK(t_max > 0 && log_scale_max >= 0, InvalidArgument, "t_max (", t_max,
           ") must be > 0 and log_scale_max (", log_scale_max, ") >= 0");
}

Json LieGroupClassifierConfig::to_json() const {
  Json j = raw;
  j["architectures"] = Json::array({kArchitecture});
  j["model_type"] = kModelType;
  j["group"] = group;
  j["image_size"] = {image_height, image_width};
  j["num_channels"] = num_channels;
  j["num_labels"] = num_labels;
  j["channels"] = channels;
  j["kernel_size"] = kernel_size;
  j["kernel_hidden"] = kernel_hidden;
  j["train_samples"] = train_samples;
  j["eval_samples"] = eval_samples;
  j["t_max"] = t_max;
  j["log_scale_max"] = log_scale_max;
  j["sample_seed"] = sample_seed;
  j["resample"] = resample;
  j["rotations"] = rotations;
  return j;
}

LieGroupClassifierConfig LieGroupClassifierConfig::from_json(const Json& j, const std::string& what) {
  LR_CHECK(j.is_object(), InvalidArgument, what, ": not a JSON object");
  LR_CHECK(is_lie_group_classifier_config(j), InvalidArgument, what, ": model_type is not ", kModelType);
  LieGroupClassifierConfig c;
  c.raw = j;
  c.group = json_get_or<std::string>(j, "group", c.group, what);
  const std::vector<int64_t> size = json_get_or<std::vector<int64_t>>(j, "image_size", {16, 16}, what);
  LR_CHECK(size.size() == 2, InvalidArgument, what, ": image_size needs [height, width]");
  c.image_height = size[0];
  c.image_width = size[1];
  c.num_channels = json_get_or<int64_t>(j, "num_channels", c.num_channels, what);
  c.num_labels = json_get_or<int64_t>(j, "num_labels", c.num_labels, what);
  c.channels = json_get_or<int64_t>(j, "channels", c.channels, what);
  c.kernel_size = json_get_or<int64_t>(j, "kernel_size", c.kernel_size, what);
  c.kernel_hidden = json_get_or<int64_t>(j, "kernel_hidden", c.kernel_hidden, what);
  c.train_samples = json_get_or<int64_t>(j, "train_samples", c.train_samples, what);
  c.eval_samples = json_get_or<int64_t>(j, "eval_samples", c.eval_samples, what);
  c.t_max = json_get_or<double>(j, "t_max", c.t_max, what);
  c.log_scale_max = json_get_or<double>(j, "log_scale_max", c.log_scale_max, what);
  c.sample_seed = json_get_or<uint64_t>(j, "sample_seed", 0, what);
  c.resample = json_get_or<bool>(j, "resample", c.resample, what);
  c.rotations = json_get_or<int64_t>(j, "rotations", c.rotations, what);
  try {
    c.check();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(str(what, ": ", e.what()));
  }
  return c;
}

bool is_lie_group_classifier_config(const Json& config) {
  return config.is_object() && config.value("model_type", "") == kModelType;
}

int64_t matched_cnn_channels(const LieGroupClassifierConfig& config) {
  LieGroupClassifierConfig group = config;
  if (group.group == "none") group.group = "gl2";
  const int64_t target = LieGroupClassifier::random(group, 0).parameter_count();
  int64_t channels = 1;
  while (cnn_parameters(config, channels + 1) <= target) ++channels;
  // The count just below or just above the target, whichever is nearer (below on a tie).
  const int64_t below = target - cnn_parameters(config, channels);
  const int64_t above = cnn_parameters(config, channels + 1) - target;
  return above < below ? channels + 1 : channels;
}

LieGroupClassifier LieGroupClassifier::random(const LieGroupClassifierConfig& config, uint64_t seed) {
  config.check();
  LieGroupClassifier m;
  m.config_ = config;
  const int64_t c = config.channels, k = config.kernel_size;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  // nn.Conv2d / nn.Linear defaults: U(±1/√fan_in).
  auto uniform = [&](at::IntArrayRef shape, int64_t fan_in) {
    return ((at::rand(shape, gen, opts) * 2 - 1) / std::sqrt(static_cast<double>(fan_in))).to(at::kFloat);
  };
  if (config.group == "none") {
    m.conv1_weight_ = uniform({c, config.num_channels, k, k}, config.num_channels * k * k);
    m.conv2_weight_ = uniform({c, c, k, k}, c * k * k);
  } else {
    m.lifting_ =
        LiftingConv2d::random(config.num_channels, c, k, config.kernel_hidden, splitmix64(seed ^ 0x11));
    m.group_conv_ = GroupConv2d::random(c, c, k, config.kernel_hidden, splitmix64(seed ^ 0x22));
    m.counter_ = at::zeros({1}, at::kLong);
  }
  m.norm1_weight_ = at::ones({c});
  m.norm1_bias_ = at::zeros({c});
  m.norm2_weight_ = at::ones({c});
  m.norm2_bias_ = at::zeros({c});
  m.classifier_weight_ = uniform({config.num_labels, c}, c);
  m.classifier_bias_ = uniform({config.num_labels}, c);
  if (config.group != "none") m.eval_elements_ = m.group_elements(false);
  return m;
}

NamedTensors LieGroupClassifier::named_parameters() const {
  NamedTensors out;
  if (config_.group == "none") {
    out = {{"conv1.weight", conv1_weight_}, {"norm1.weight", norm1_weight_}, {"norm1.bias", norm1_bias_},
           {"conv2.weight", conv2_weight_}, {"norm2.weight", norm2_weight_}, {"norm2.bias", norm2_bias_}};
  } else {
    auto mlp = [&](const std::string& prefix, const KernelMlp& k) {
      out.emplace_back(prefix + ".w1", k.w1);
      out.emplace_back(prefix + ".b1", k.b1);
      out.emplace_back(prefix + ".w2", k.w2);
      out.emplace_back(prefix + ".b2", k.b2);
    };
    mlp("lifting.kernel", lifting_.kernel);
    out.emplace_back("norm1.weight", norm1_weight_);
    out.emplace_back("norm1.bias", norm1_bias_);
    mlp("group_conv.kernel", group_conv_.kernel);
    out.emplace_back("norm2.weight", norm2_weight_);
    out.emplace_back("norm2.bias", norm2_bias_);
  }
  out.emplace_back("classifier.weight", classifier_weight_);
  out.emplace_back("classifier.bias", classifier_bias_);
  return out;
}

NamedTensors LieGroupClassifier::named_buffers() const {
  if (config_.group == "none") return {};
  return {{"group_sample_counter", counter_}};
}

int64_t LieGroupClassifier::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

std::vector<ParamGroup> LieGroupClassifier::param_groups() const {
  return no_decay_on_vectors(named_parameters());
}

at::Tensor LieGroupClassifier::group_elements(bool training) const {
  LR_CHECK(config_.group != "none", InvalidArgument, "a plain CNN (group none) has no group elements");
  const LieGroupClassifierConfig& c = config_;
  uint64_t seed = splitmix64(c.sample_seed ^ 0xE7A1);
  int64_t n = c.eval_samples;
  if (training) {
    int64_t& counter = counter_.data_ptr<int64_t>()[0];
    seed = splitmix64(c.sample_seed ^ splitmix64(static_cast<uint64_t>(counter) + 1));
    ++counter;
    n = c.train_samples;
  }
  const int64_t base = n / c.rotations;
  const at::Tensor g = c.group == "sl2" ? sample_sl2_haar(base, c.t_max, seed)
                                        : sample_gl2_haar(base, c.t_max, c.log_scale_max, seed);
  // Each draw under the K rotations R(2πj/K): every element is still Haar-distributed (left
  // invariance), and the set is closed under the grid's rotation by 2π/K.
  std::vector<at::Tensor> all;
  for (int64_t j = 0; j < c.rotations; ++j) {
    const double a = 2 * std::numbers::pi * static_cast<double>(j) / static_cast<double>(c.rotations);
    // Entries that are 0 or ±1 in exact arithmetic are made exactly so, so that with K = 2 or 4 every
    // product of these rotations is exact and the relative elements agree bit for bit.
    auto snap = [](double v) {
      return std::abs(v) < 1e-12 ? 0.0 : std::abs(std::abs(v) - 1) < 1e-12 ? std::round(v) : v;
    };
    const at::Tensor r =
        at::tensor({snap(std::cos(a)), snap(-std::sin(a)), snap(std::sin(a)), snap(std::cos(a))}, at::kDouble)
            .view({2, 2});
    all.push_back(at::matmul(r, g));
  }
  return at::cat(all);
}

at::Tensor LieGroupClassifier::forward_on(const at::Tensor& pixels, const at::Tensor& g) const {
  const LieGroupClassifierConfig& c = config_;
  LR_CHECK(pixels.dim() == 4 && pixels.size(1) == c.num_channels && pixels.size(2) == c.image_height &&
               pixels.size(3) == c.image_width,
           InvalidArgument, "pixels must be [batch, ", c.num_channels, ", ", c.image_height, ", ",
           c.image_width, "], got ", pixels.sizes());
  const at::Tensor x = pixels.to(at::kFloat);
  at::Tensor z;
  if (c.group == "none") {
    const at::Tensor none;
    at::Tensor h = at::gelu(
        channel_norm(at::conv2d(x, conv1_weight_, none, 1, c.kernel_size / 2), norm1_weight_, norm1_bias_));
    h = at::max_pool2d(h, {2, 2});
    h = at::gelu(
        channel_norm(at::conv2d(h, conv2_weight_, none, 1, c.kernel_size / 2), norm2_weight_, norm2_bias_));
    z = h.amax({2, 3});
  } else {
    const int64_t b = x.size(0), n = g.size(0);
    at::Tensor h =
        at::gelu(channel_norm(lifting_.forward(x, g), norm1_weight_, norm1_bias_));  // [B, C, N, H, W]
    // Spatial max pooling per element (the authors' GMaxPool2D).
    h = at::max_pool2d(h.reshape({b, c.channels * n, h.size(3), h.size(4)}), {2, 2});
    h = h.view({b, c.channels, n, h.size(2), h.size(3)});
    h = at::gelu(channel_norm(group_conv_.forward(h, g, g), norm2_weight_, norm2_bias_));
    z = h.amax({2, 3, 4});  // GlobalMaxProjection: over the group and the plane
  }
  return at::linear(z, classifier_weight_, classifier_bias_);
}

at::Tensor LieGroupClassifier::forward(const at::Tensor& pixels, bool training) const {
  if (config_.group == "none") return forward_on(pixels, at::Tensor());
  return forward_on(pixels, training && config_.resample ? group_elements(true) : eval_elements_);
}

void LieGroupClassifier::save(const fs::path& dir, at::ScalarType dtype) const {
  NamedTensors tensors = named_parameters();
  for (auto& t : named_buffers()) tensors.push_back(t);
  save_model_directory(dir, config_.to_json(), tensors, dtype);
}

LieGroupClassifier LieGroupClassifier::load(const fs::path& dir) {
  const fs::path config_path = dir / "config.json";
  LR_CHECK(fs::exists(config_path), NotFound, dir.string(), " is not a model directory (no config.json)");
  LieGroupClassifier m =
      random(LieGroupClassifierConfig::from_json(read_json_file(config_path), config_path.string()), 0);
  const Checkpoint ckpt = Checkpoint::open(dir);
  NamedTensors all = m.named_parameters();
  for (auto& t : m.named_buffers()) all.push_back(t);
  for (auto& [name, t] : all) {
    LR_CHECK(ckpt.contains(name), NotFound, dir.string(), ": tensor \"", name,
             "\" is missing from the checkpoint");
    const at::Tensor saved = ckpt.load(name, t.scalar_type());
    LR_CHECK(saved.sizes() == t.sizes(), InvalidArgument, dir.string(), ": tensor \"", name, "\" has shape ",
             saved.sizes(), ", expected ", t.sizes(), " from config.json");
    t.copy_(saved);
  }
  return m;
}

}  // namespace lowrank::nn
