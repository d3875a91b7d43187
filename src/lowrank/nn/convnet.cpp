// The ConvNet image classifier: MetaNeXt / ConvNeXt / UniRepLKNet blocks; see convnet.h.
#include "lowrank/nn/convnet.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/mix/dilated_reparam.h"
#include "lowrank/nn/image_input.h"
#include "lowrank/nn/weight_decay_groups.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

namespace {

constexpr const char* kArchitecture = "LowrankConvNetForImageClassification";
constexpr const char* kModelType = "lowrank_convnet";
constexpr double kLayerNormEps = 1e-6;  // timm's LayerNorm default (ConvNeXt block, MLP head)

double positive_number(const Json& object, const std::string& key, const std::string& what, double fallback) {
  const auto it = object.find(key);
  if (it == object.end()) return fallback;
  LR_CHECK(it->is_number() && it->get<double>() > 0, InvalidArgument, what, ": \"", key,
           "\" must be a positive number, got ", it->dump());
  return it->get<double>();
}

std::string one_of(const Json& object, const std::string& key, const std::string& what,
                   const std::vector<std::string>& known, const std::string& fallback) {
  const auto it = object.find(key);
  if (it == object.end()) return fallback;
  std::string list;
  for (const std::string& k : known) list += str(list.empty() ? "" : ", ", k);
  LR_CHECK(it->is_string() && std::find(known.begin(), known.end(), it->get<std::string>()) != known.end(),
           InvalidArgument, what, ": \"", key, "\" ", it->dump(), " is not one of ", list);
  return it->get<std::string>();
}

at::Tensor layer_norm_channels_last(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return at::layer_norm(x, {x.size(-1)}, w, b, kLayerNormEps);
}

}  // namespace

// One block's tensors. Which are set depends on the block and mixer kind and on the deploy form.
struct ConvBlock {
  std::string block, mixer;
  int64_t channels = 0, kernel_size = 0;
  bool deployed = false;
  std::optional<mix::InceptionDW> inception;
  std::optional<mix::DilatedReparam> dilated;
  at::Tensor dw_weight, dw_bias;  // mixer "dwconv" (dw_bias undefined: no bias)
  BatchNorm norm;                 // metanext; unireplknet (training form)
  at::Tensor ln_weight, ln_bias;  // convnext
  at::Tensor se_down_weight, se_down_bias, se_up_weight, se_up_bias;  // unireplknet
  at::Tensor fc1_weight, fc1_bias, fc2_weight, fc2_bias;              // fc2_bias: not in unireplknet training
  at::Tensor grn_gamma, grn_beta;  // unireplknet (grn_beta: training form only)
  BatchNorm mlp_norm;              // unireplknet training form
  at::Tensor gamma;                // layer scale (not in a deployed unireplknet block)

  bool unireplknet() const { return block == "unireplknet"; }
  // UniRepLKNet's deploy form folds its norms; the other blocks keep theirs.
  bool folded() const { return deployed && unireplknet(); }

  at::Tensor mix(const at::Tensor& x, bool training) const {
    if (inception) return inception->forward(x);
    if (dilated) return dilated->forward(x, training);
    const int64_t pad = kernel_size / 2;
    return at::conv2d(x, dw_weight, dw_bias, {1, 1}, {pad, pad}, {1, 1}, channels);
  }

  at::Tensor forward(const at::Tensor& x, bool training) const {
    at::Tensor h = mix(x, training);
    if (block == "metanext") {
      h = norm.forward(h, training).permute({0, 2, 3, 1});
      h = at::linear(at::gelu(at::linear(h, fc1_weight, fc1_bias)), fc2_weight, fc2_bias);
      return x + h.permute({0, 3, 1, 2}) * gamma.view({1, -1, 1, 1});
    }
    if (block == "convnext") {
      h = layer_norm_channels_last(h.permute({0, 2, 3, 1}), ln_weight, ln_bias);
      h = at::linear(at::gelu(at::linear(h, fc1_weight, fc1_bias)), fc2_weight, fc2_bias);
      return x + h.permute({0, 3, 1, 2}) * gamma.view({1, -1, 1, 1});
    }
    // unireplknet
    if (!folded()) h = norm.forward(h, training);
    // Squeeze-and-excitation: channel gates from the spatial mean.
    const at::Tensor pooled = h.mean({2, 3});
    const at::Tensor gate = at::sigmoid(
        at::linear(at::relu(at::linear(pooled, se_down_weight, se_down_bias)), se_up_weight, se_up_bias));
    h = (h * gate.view({h.size(0), -1, 1, 1})).permute({0, 2, 3, 1});
    h = at::gelu(at::linear(h, fc1_weight, fc1_bias));
    // GRN over the spatial positions of each channel, normalised by the channel mean.
    const at::Tensor g = at::linalg_vector_norm(h, 2, at::IntArrayRef{1, 2}, /*keepdim=*/true);
    const at::Tensor n = g / (g.mean(-1, /*keepdim=*/true) + 1e-6);
    h = (grn_gamma * n + 1) * h;
    if (grn_beta.defined()) h = h + grn_beta;
    h = at::linear(h, fc2_weight, fc2_bias).permute({0, 3, 1, 2});
    if (folded()) return x + h;
    return x + mlp_norm.forward(h, training) * gamma.view({1, -1, 1, 1});
  }

  void append(const std::string& p, bool parameters, bool buffers, NamedTensors& out) const {
    const std::string m = p + ".mixer";
    if (parameters) {
      if (inception) inception->append_parameters(m, out);
      if (dilated) dilated->append_parameters(m, out);
      if (dw_weight.defined()) out.emplace_back(m + ".weight", dw_weight);
      if (dw_bias.defined()) out.emplace_back(m + ".bias", dw_bias);
    }
    if (buffers && dilated) dilated->append_buffers(m, out);
    if ((block == "metanext" || (unireplknet() && !folded()))) {
      if (parameters) norm.append_parameters(p + ".norm", out);
      if (buffers) norm.append_buffers(p + ".norm", out);
    }
    if (!parameters) {
      if (unireplknet() && !folded()) mlp_norm.append_buffers(p + ".mlp_norm", out);
      return;
    }
    if (block == "convnext") {
      out.emplace_back(p + ".norm.weight", ln_weight);
      out.emplace_back(p + ".norm.bias", ln_bias);
    }
    if (unireplknet()) {
      out.emplace_back(p + ".se.down.weight", se_down_weight);
      out.emplace_back(p + ".se.down.bias", se_down_bias);
      out.emplace_back(p + ".se.up.weight", se_up_weight);
      out.emplace_back(p + ".se.up.bias", se_up_bias);
      out.emplace_back(p + ".grn.gamma", grn_gamma);
      if (grn_beta.defined()) out.emplace_back(p + ".grn.beta", grn_beta);
    }
    out.emplace_back(p + ".mlp.fc1.weight", fc1_weight);
    out.emplace_back(p + ".mlp.fc1.bias", fc1_bias);
    out.emplace_back(p + ".mlp.fc2.weight", fc2_weight);
    if (fc2_bias.defined()) out.emplace_back(p + ".mlp.fc2.bias", fc2_bias);
    if (unireplknet() && !folded()) {
      mlp_norm.append_parameters(p + ".mlp_norm", out);
      if (buffers) mlp_norm.append_buffers(p + ".mlp_norm", out);
    }
    if (gamma.defined()) out.emplace_back(p + ".gamma", gamma);
  }
};

namespace {

std::unique_ptr<ConvBlock> build_block(const std::string& p, const ConvStage& s, const ConvNetConfig& c,
                                       const ConvTensorSource& source, at::ScalarType dtype) {
  auto b = std::make_unique<ConvBlock>();
  const int64_t C = s.hidden_size;
  b->block = s.block;
  b->mixer = s.mixer;
  b->channels = C;
  b->kernel_size = s.kernel_size;
  b->deployed = c.deploy;
  const std::string m = p + ".mixer";
  if (s.mixer == "inception_dw") {
    b->inception = mix::InceptionDW::make(m, C, s.inception, source);
  } else if (s.mixer == "dilated_reparam") {
    b->dilated = mix::DilatedReparam::make(m, C, s.kernel_size, c.deploy, source);
  } else {
    const int64_t K = s.kernel_size;
    b->dw_weight = source(m + ".weight", {C, 1, K, K}, ParamInit::kNormal, {});
    // The UniRepLKNet block's conv feeds a BN: no bias in training (the authors'), one once folded.
    if (!b->unireplknet() || c.deploy) b->dw_bias = source(m + ".bias", {C}, ParamInit::kZeros, {});
  }
  if (b->block == "metanext" || (b->unireplknet() && !c.deploy))
    b->norm = BatchNorm::make(p + ".norm", C, source, c.batch_norm_eps);
  if (b->block == "convnext") {
    b->ln_weight = source(p + ".norm.weight", {C}, ParamInit::kOnes, {});
    b->ln_bias = source(p + ".norm.bias", {C}, ParamInit::kZeros, {});
  }
  const auto hidden = static_cast<int64_t>(s.mlp_ratio * static_cast<double>(C));
  if (b->unireplknet()) {
    const int64_t se = C / 4;
    b->se_down_weight = source(p + ".se.down.weight", {se, C}, ParamInit::kNormal, {});
    b->se_down_bias = source(p + ".se.down.bias", {se}, ParamInit::kZeros, {});
    b->se_up_weight = source(p + ".se.up.weight", {C, se}, ParamInit::kNormal, {});
    b->se_up_bias = source(p + ".se.up.bias", {C}, ParamInit::kZeros, {});
    b->grn_gamma = source(p + ".grn.gamma", {hidden}, ParamInit::kZeros, {});
    if (!c.deploy) b->grn_beta = source(p + ".grn.beta", {hidden}, ParamInit::kZeros, {});
  }
  b->fc1_weight = source(p + ".mlp.fc1.weight", {hidden, C}, ParamInit::kNormal, {});
  b->fc1_bias = source(p + ".mlp.fc1.bias", {hidden}, ParamInit::kZeros, {});
  b->fc2_weight = source(p + ".mlp.fc2.weight", {C, hidden}, ParamInit::kNormal, {});
  if (!b->unireplknet() || c.deploy) b->fc2_bias = source(p + ".mlp.fc2.bias", {C}, ParamInit::kZeros, {});
  if (b->unireplknet() && !c.deploy)
    b->mlp_norm = BatchNorm::make(p + ".mlp_norm", C, source, c.batch_norm_eps);
  if (!b->folded())
    b->gamma = source(p + ".gamma", {C}, ParamInit::kValue, at::full({C}, c.layer_scale_init, dtype));
  return b;
}

// The deploy form's tensors of a training-form block, under the block's prefix `p`.
void deploy_block(const std::string& p, const ConvBlock& b, std::map<std::string, at::Tensor>& out) {
  NamedTensors kept;
  b.append(p, /*parameters=*/true, /*buffers=*/true, kept);
  for (auto& [n, t] : kept) out[n] = t.detach().clone();
  if (!b.dilated && !b.unireplknet()) return;
  const std::string m = p + ".mixer";
  // Drop what the deploy form does not have; the merged tensors replace it.
  std::erase_if(out, [&](const auto& e) { return e.first.rfind(m + ".", 0) == 0; });
  at::Tensor weight, bias;
  if (b.inception) {
    NamedTensors t;
    b.inception->append_parameters(m, t);
    for (auto& [n, v] : t) out[n] = v.detach().clone();
  } else if (b.dilated) {
    std::tie(weight, bias) = b.dilated->merged();
  } else {
    weight = b.dw_weight;
    bias = b.dw_bias.defined() ? b.dw_bias : at::zeros({b.channels}, b.dw_weight.options());
  }
  if (b.unireplknet()) {
    // The block's BN folds into the mixer's conv (the authors' reparameterize).
    LR_CHECK(!b.inception, Unsupported, p,
             ": the deploy form of a UniRepLKNet block with an inception_dw mixer is not implemented "
             "(its BN cannot fold into the identity channels)");
    auto [s, t] = b.norm.eval_affine();
    weight = weight * s.view({-1, 1, 1, 1});
    bias = bias * s + t;
    for (const char* n :
         {".norm.weight", ".norm.bias", ".norm.running_mean", ".norm.running_var", ".mlp_norm.weight",
          ".mlp_norm.bias", ".mlp_norm.running_mean", ".mlp_norm.running_var", ".gamma", ".grn.beta"})
      out.erase(p + n);
    // fc2' = γ s ⊙ W_2,  b_2' = γ ⊙ (s ⊙ (W_2 β_g) + t): W_2's BN, the layer scale and GRN's β.
    auto [s2, t2] = b.mlp_norm.eval_affine();
    const at::Tensor wb = at::mv(b.fc2_weight, b.grn_beta);
    out[p + ".mlp.fc2.weight"] = (b.fc2_weight * (b.gamma * s2).unsqueeze(1)).detach().clone();
    out[p + ".mlp.fc2.bias"] = (b.gamma * (s2 * wb + t2)).detach().clone();
  }
  if (weight.defined()) {
    const std::string w = b.dilated ? m + ".lk.weight" : m + ".weight";
    const std::string bb = b.dilated ? m + ".lk.bias" : m + ".bias";
    out[w] = weight.detach().clone();
    out[bb] = bias.detach().clone();
  }
}

}  // namespace

const std::vector<std::string>& convnet_blocks() {
  static const std::vector<std::string> names{"metanext", "convnext", "unireplknet"};
  return names;
}

const std::vector<std::string>& convnet_mixers() {
  static const std::vector<std::string> names{"inception_dw", "dwconv", "dilated_reparam"};
  return names;
}

bool is_convnet_config(const Json& config) {
  const auto it = config.find("architectures");
  return it != config.end() && it->is_array() && !it->empty() && (*it)[0].is_string() &&
         (*it)[0].get<std::string>() == kArchitecture;
}

int64_t ConvNetConfig::num_blocks() const {
  int64_t n = 0;
  for (const ConvStage& s : stages) n += s.depth;
  return n;
}

ConvNetConfig ConvNetConfig::from_json(const Json& json, std::string_view what_view) {
  const std::string what(what_view);
  LR_CHECK(json.is_object(), InvalidArgument, what, ": expected a JSON object");
  LR_CHECK(is_convnet_config(json), InvalidArgument, what, ": \"architectures\" must be [\"", kArchitecture,
           "\"]");
  LR_CHECK(json.value("model_type", std::string(kModelType)) == kModelType, InvalidArgument, what,
           ": \"model_type\" must be \"", kModelType, "\"");
  ConvNetConfig c;
  c.raw = json;
  const ImageInput input = read_image_input(json, what);
  c.image_height = input.height;
  c.image_width = input.width;
  c.num_channels = input.channels;
  c.patch_size = input.patch_size;
  c.num_labels = input.num_labels;
  c.layer_scale_init = positive_number(json, "layer_scale_init", what, 1e-6);
  c.head_mlp_ratio = positive_number(json, "head_mlp_ratio", what, 3);
  c.batch_norm_eps = positive_number(json, "batch_norm_eps", what, 1e-5);
  c.initializer_range = positive_number(json, "initializer_range", what, 0.02);
  if (auto it = json.find("deploy"); it != json.end()) {
    LR_CHECK(it->is_boolean(), InvalidArgument, what, ": \"deploy\" must be true or false, got ", it->dump());
    c.deploy = it->get<bool>();
  }
  const auto stages = json.find("stages");
  LR_CHECK(stages != json.end() && stages->is_array() && !stages->empty(), InvalidArgument, what,
           ": \"stages\" must be a non-empty list of {depth, hidden_size, block, mixer, ...}");
  int64_t height = c.image_height / c.patch_size, width = c.image_width / c.patch_size;
  static const std::set<std::string> known{"depth",
                                           "hidden_size",
                                           "block",
                                           "mixer",
                                           "kernel_size",
                                           "mlp_ratio",
                                           "square_kernel_size",
                                           "band_kernel_size",
                                           "branch_ratio"};
  for (size_t i = 0; i < stages->size(); ++i) {
    const Json& sj = (*stages)[i];
    const std::string sw = str(what, ": stages[", i, "]");
    LR_CHECK(sj.is_object(), InvalidArgument, sw, " must be an object, got ", sj.dump());
    for (const auto& [key, value] : sj.items())
      LR_CHECK(known.contains(key), InvalidArgument, sw, ": unknown key \"", key,
               "\" (known: depth, hidden_size, block, mixer, kernel_size, mlp_ratio, square_kernel_size, "
               "band_kernel_size, branch_ratio)");
    ConvStage s;
    s.depth = positive_int_key(sj, "depth", sw);
    s.hidden_size = positive_int_key(sj, "hidden_size", sw);
    s.block = one_of(sj, "block", sw, convnet_blocks(), "metanext");
    s.mixer = one_of(sj, "mixer", sw, convnet_mixers(), "inception_dw");
    s.mlp_ratio = positive_number(sj, "mlp_ratio", sw, 4);
    if (s.mixer == "inception_dw") {
      LR_CHECK(!sj.contains("kernel_size"), InvalidArgument, sw,
               ": \"kernel_size\" belongs to dwconv and dilated_reparam; inception_dw takes "
               "\"square_kernel_size\" and \"band_kernel_size\"");
      s.inception.square_kernel_size = positive_int_key(sj, "square_kernel_size", sw, 3);
      s.inception.band_kernel_size = positive_int_key(sj, "band_kernel_size", sw, 11);
      s.inception.branch_ratio = positive_number(sj, "branch_ratio", sw, 0.125);
    } else {
      for (const char* key : {"square_kernel_size", "band_kernel_size", "branch_ratio"})
        LR_CHECK(!sj.contains(key), InvalidArgument, sw, ": \"", key, "\" belongs to inception_dw, not ",
                 s.mixer);
      s.kernel_size = positive_int_key(sj, "kernel_size", sw, s.mixer == "dwconv" ? 7 : 13);
      LR_CHECK(s.kernel_size % 2 == 1, InvalidArgument, sw,
               ": \"kernel_size\" must be odd (same padding), got ", s.kernel_size);
      if (s.mixer == "dilated_reparam") {
        try {
          (void)mix::dilated_reparam_branches(s.kernel_size);
        } catch (const InvalidArgument& e) {
          throw InvalidArgument(str(sw, ": ", e.what()));
        }
      }
    }
    if (s.block == "unireplknet")
      LR_CHECK(s.hidden_size >= 4, InvalidArgument, sw,
               ": a unireplknet block needs \"hidden_size\" >= 4 (its SE has hidden_size/4 units), got ",
               s.hidden_size);
    if (i > 0) {
      LR_CHECK(height % 2 == 0 && width % 2 == 0, InvalidArgument, sw,
               ": the 2x2 stride-2 downsampling before this stage needs an even feature map, got ", height,
               "x", width, " (image_size / patch_size, halved per stage)");
      height /= 2;
      width /= 2;
    }
    s.height = height;
    s.width = width;
    c.stages.push_back(s);
  }
  return c;
}

ConvNetConfig ConvNetConfig::load(const fs::path& dir) {
  const fs::path path = fs::is_directory(dir) ? dir / "config.json" : dir;
  LR_CHECK(fs::exists(path), NotFound, path.string(), " does not exist");
  return from_json(read_json_file(path), path.string());
}

ConvNet::ConvNet() = default;
ConvNet::ConvNet(ConvNet&&) noexcept = default;
ConvNet& ConvNet::operator=(ConvNet&&) noexcept = default;
ConvNet::~ConvNet() = default;

void ConvNet::build(const ConvNetConfig& c, const LoadOptions& options, const ConvTensorSource& source) {
  config_ = c;
  dtype_ = options.dtype;
  device_ = options.device;
  const int64_t D0 = c.stages.front().hidden_size;
  stem_weight_ =
      source("stem.conv.weight", {D0, c.num_channels, c.patch_size, c.patch_size}, ParamInit::kNormal, {});
  stem_bias_ = source("stem.conv.bias", {D0}, ParamInit::kZeros, {});
  stem_norm_ = BatchNorm::make("stem.norm", D0, source, c.batch_norm_eps);
  for (size_t s = 0; s < c.stages.size(); ++s) {
    const int64_t D = c.stages[s].hidden_size;
    const std::string p = str("stages.", s);
    if (s > 0) {
      const int64_t prev = c.stages[s - 1].hidden_size;
      Downsample d;
      d.norm = BatchNorm::make(p + ".downsample.norm", prev, source, c.batch_norm_eps);
      d.weight = source(p + ".downsample.conv.weight", {D, prev, 2, 2}, ParamInit::kNormal, {});
      d.bias = source(p + ".downsample.conv.bias", {D}, ParamInit::kZeros, {});
      downsample_.push_back(std::move(d));
    }
    blocks_.emplace_back();
    for (int64_t j = 0; j < c.stages[s].depth; ++j)
      blocks_.back().push_back(build_block(str(p, ".blocks.", j), c.stages[s], c, source, dtype_));
  }
  const int64_t last = c.stages.back().hidden_size;
  const auto hidden = static_cast<int64_t>(c.head_mlp_ratio * static_cast<double>(last));
  head_fc1_weight_ = source("head.fc1.weight", {hidden, last}, ParamInit::kNormal, {});
  head_fc1_bias_ = source("head.fc1.bias", {hidden}, ParamInit::kZeros, {});
  head_norm_weight_ = source("head.norm.weight", {hidden}, ParamInit::kOnes, {});
  head_norm_bias_ = source("head.norm.bias", {hidden}, ParamInit::kZeros, {});
  head_fc2_weight_ = source("head.fc2.weight", {c.num_labels, hidden}, ParamInit::kNormal, {});
  head_fc2_bias_ = source("head.fc2.bias", {c.num_labels}, ParamInit::kZeros, {});
}

ConvNet ConvNet::load(const fs::path& dir, const LoadOptions& options) {
  const ConvNetConfig config = ConvNetConfig::load(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  std::string files;
  for (const fs::path& f : ckpt.files()) files += str(files.empty() ? "" : ", ", f.string());
  std::set<std::string> used;
  ConvTensorSource source = [&](const std::string& name, std::vector<int64_t> shape, ParamInit,
                                const at::Tensor&) {
    LR_CHECK(ckpt.contains(name), NotFound, "tensor \"", name, "\" is missing from the checkpoint (", files,
             ")");
    const TensorInfo& info = ckpt.info(name);
    LR_CHECK(info.shape == shape, InvalidArgument, "tensor \"", name, "\" in ", files, " has shape ",
             at::IntArrayRef(info.shape), ", expected ", at::IntArrayRef(shape), " from config.json");
    used.insert(name);
    return ckpt.load(name, options.dtype).to(options.device);
  };
  ConvNet model;
  model.build(config, options, source);
  for (const std::string& name : ckpt.names())
    if (!used.contains(name)) log::warn(dir.string(), ": tensor ", name, " is not used by ", kArchitecture);
  return model;
}

ConvNet ConvNet::random(const ConvNetConfig& config, uint64_t seed, const LoadOptions& options) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  ConvTensorSource source = [&](const std::string&, std::vector<int64_t> shape, ParamInit init,
                                const at::Tensor& value) {
    at::Tensor t;
    if (init == ParamInit::kValue) {
      t = value.detach().to(options.dtype).clone();
    } else if (init == ParamInit::kNormal) {
      t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
      t.normal_(0.0, config.initializer_range, gen);
      t = t.to(options.dtype);
    } else {
      t = init == ParamInit::kOnes ? at::ones(shape, options.dtype) : at::zeros(shape, options.dtype);
    }
    return t.to(options.device);
  };
  ConvNet model;
  model.build(config, options, source);
  return model;
}

void ConvNet::save(const fs::path& dir, std::optional<at::ScalarType> dtype) const {
  Json raw = config_.raw;
  raw["model_type"] = kModelType;
  save_model_directory(dir, raw, named_tensors(), dtype.value_or(dtype_));
}

at::Tensor ConvNet::pooled(const at::Tensor& pixels, bool training) const {
  const ConvNetConfig& c = config_;
  LR_CHECK(pixels.dim() == 4 && pixels.size(1) == c.num_channels && pixels.size(2) == c.image_height &&
               pixels.size(3) == c.image_width,
           InvalidArgument, "pixels must be [batch, ", c.num_channels, ", ", c.image_height, ", ",
           c.image_width, "] (num_channels, image_size), got ", pixels.sizes());
  at::Tensor h =
      at::conv2d(pixels.to(device_).to(dtype_), stem_weight_, stem_bias_, {c.patch_size, c.patch_size});
  h = stem_norm_.forward(h, training);
  for (size_t s = 0; s < blocks_.size(); ++s) {
    if (s > 0) {
      const Downsample& d = downsample_[s - 1];
      h = at::conv2d(d.norm.forward(h, training), d.weight, d.bias, {2, 2});
    }
    for (const auto& block : blocks_[s]) h = block->forward(h, training);
  }
  return h.mean({2, 3});
}

at::Tensor ConvNet::forward(const at::Tensor& pixels, bool training) const {
  at::Tensor h = at::gelu(at::linear(pooled(pixels, training), head_fc1_weight_, head_fc1_bias_));
  h = layer_norm_channels_last(h, head_norm_weight_, head_norm_bias_);
  return at::linear(h, head_fc2_weight_, head_fc2_bias_);
}

NamedTensors ConvNet::collect(bool parameters, bool buffers) const {
  NamedTensors out;
  if (parameters) {
    out.emplace_back("stem.conv.weight", stem_weight_);
    out.emplace_back("stem.conv.bias", stem_bias_);
    stem_norm_.append_parameters("stem.norm", out);
  }
  if (buffers) stem_norm_.append_buffers("stem.norm", out);
  for (size_t s = 0; s < blocks_.size(); ++s) {
    const std::string p = str("stages.", s);
    if (s > 0) {
      const Downsample& d = downsample_[s - 1];
      if (parameters) d.norm.append_parameters(p + ".downsample.norm", out);
      if (buffers) d.norm.append_buffers(p + ".downsample.norm", out);
      if (parameters) {
        out.emplace_back(p + ".downsample.conv.weight", d.weight);
        out.emplace_back(p + ".downsample.conv.bias", d.bias);
      }
    }
    for (size_t j = 0; j < blocks_[s].size(); ++j)
      blocks_[s][j]->append(str(p, ".blocks.", j), parameters, buffers, out);
  }
  if (parameters) {
    out.emplace_back("head.fc1.weight", head_fc1_weight_);
    out.emplace_back("head.fc1.bias", head_fc1_bias_);
    out.emplace_back("head.norm.weight", head_norm_weight_);
    out.emplace_back("head.norm.bias", head_norm_bias_);
    out.emplace_back("head.fc2.weight", head_fc2_weight_);
    out.emplace_back("head.fc2.bias", head_fc2_bias_);
  }
  return out;
}

NamedTensors ConvNet::named_tensors() const {
  return collect(true, true);
}
NamedTensors ConvNet::named_parameters() const {
  return collect(true, false);
}
NamedTensors ConvNet::named_buffers() const {
  return collect(false, true);
}

std::vector<ParamGroup> ConvNet::param_groups() const {
  return no_decay_on_vectors(named_parameters());
}

ConvNet ConvNet::deploy() const {
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> tensors;
  for (auto& [n, t] : named_tensors()) tensors[n] = t.detach().clone();
  for (size_t s = 0; s < blocks_.size(); ++s)
    for (size_t j = 0; j < blocks_[s].size(); ++j) {
      const std::string p = str("stages.", s, ".blocks.", j);
      // This block's tensors are replaced by its deploy form's.
      std::erase_if(tensors, [&](const auto& e) { return e.first.rfind(p + ".", 0) == 0; });
      if (!config_.deploy) {
        deploy_block(p, *blocks_[s][j], tensors);
      } else {
        NamedTensors kept;
        blocks_[s][j]->append(p, true, true, kept);
        for (auto& [n, t] : kept) tensors[n] = t.detach().clone();
      }
    }
  Json raw = config_.raw;
  raw["deploy"] = true;
  const ConvNetConfig config = ConvNetConfig::from_json(raw, "deploy form");
  ConvTensorSource source = [&](const std::string& name, std::vector<int64_t> shape, ParamInit,
                                const at::Tensor&) {
    const auto it = tensors.find(name);
    LR_CHECK(it != tensors.end(), InternalError, "deploy form: tensor \"", name, "\" was not computed");
    LR_CHECK(it->second.sizes() == at::IntArrayRef(shape), InternalError, "deploy form: tensor \"", name,
             "\" is ", it->second.sizes(), ", expected ", at::IntArrayRef(shape));
    return it->second;
  };
  ConvNet model;
  model.build(config, LoadOptions{dtype_, device_}, source);
  return model;
}

}  // namespace lowrank::nn
