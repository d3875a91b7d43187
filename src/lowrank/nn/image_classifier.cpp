// The image classifier: patch stem, stages of the trunk's decoder layers, pooling and head; see
// image_classifier.h.
#include "lowrank/nn/image_classifier.h"

#include <set>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/decoder_layer.h"
#include "lowrank/nn/image_input.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

namespace {

constexpr const char* kArchitecture = "LowrankMixerForImageClassification";
constexpr const char* kScore = "score";

std::string string_key(const Json& object, const std::string& key, const std::string& what,
                       const std::string& fallback) {
  const auto it = object.find(key);
  if (it == object.end()) return fallback;
  LR_CHECK(it->is_string(), InvalidArgument, what, ": \"", key, "\" must be a string, got ", it->dump());
  return it->get<std::string>();
}

}  // namespace

bool is_image_classifier_config(const Json& config) {
  const auto it = config.find("architectures");
  return it != config.end() && it->is_array() && !it->empty() && (*it)[0].is_string() &&
         (*it)[0].get<std::string>() == kArchitecture;
}

int64_t ImageClassifierConfig::num_layers() const {
  int64_t n = 0;
  for (const ImageStage& s : stages) n += s.depth;
  return n;
}

ImageClassifierConfig ImageClassifierConfig::from_json(const Json& json, std::string_view what_view) {
  const std::string what(what_view);
  LR_CHECK(json.is_object(), InvalidArgument, what, ": expected a JSON object");
  LR_CHECK(is_image_classifier_config(json), InvalidArgument, what, ": \"architectures\" must be [\"",
           kArchitecture, "\"]");
  LR_CHECK(string_key(json, "model_type", what, "lowrank_mixer") == "lowrank_mixer", InvalidArgument, what,
           ": \"model_type\" must be \"lowrank_mixer\"");
  ImageClassifierConfig c;
  c.raw = json;
  const ImageInput input = read_image_input(json, what);
  c.image_height = input.height;
  c.image_width = input.width;
  c.num_channels = input.channels;
  c.patch_size = input.patch_size;
  c.num_labels = input.num_labels;
  if (auto it = json.find("rms_norm_eps"); it != json.end() && it->is_number())
    c.rms_norm_eps = it->get<double>();

  const auto stages = json.find("stages");
  LR_CHECK(stages != json.end() && stages->is_array() && !stages->empty(), InvalidArgument, what,
           ": \"stages\" must be a non-empty list of {depth, hidden_size, mixer, block}");
  Grid2d grid{c.image_height / c.patch_size, c.image_width / c.patch_size};
  std::vector<Json> stage_options;  // per stage: its mixer's options over mixer_config's
  for (size_t i = 0; i < stages->size(); ++i) {
    const Json& sj = (*stages)[i];
    const std::string sw = str(what, ": stages[", i, "]");
    LR_CHECK(sj.is_object(), InvalidArgument, sw, " must be an object, got ", sj.dump());
    static const std::set<std::string> known{"depth",        "hidden_size",       "mixer",
                                             "block",        "intermediate_size", "num_attention_heads",
                                             "mixer_options"};
    for (const auto& [key, value] : sj.items())
      LR_CHECK(known.contains(key), InvalidArgument, sw, ": unknown key \"", key,
               "\" (known: depth, hidden_size, mixer, block, intermediate_size, num_attention_heads, "
               "mixer_options)");
    const Json options = sj.value("mixer_options", Json::object());
    LR_CHECK(options.is_object(), InvalidArgument, sw, ": \"mixer_options\" must be an object, got ",
             options.dump());
    stage_options.push_back(options);
    ImageStage s;
    s.depth = positive_int_key(sj, "depth", sw);
    s.hidden_size = positive_int_key(sj, "hidden_size", sw);
    s.intermediate_size = positive_int_key(sj, "intermediate_size", sw, 4 * s.hidden_size);
    s.num_attention_heads =
        positive_int_key(sj, "num_attention_heads", sw, std::max<int64_t>(1, s.hidden_size / 32));
    s.mixer = string_key(sj, "mixer", sw, "attention");
    s.block = string_key(sj, "block", sw, "prenorm");
    LR_CHECK(s.block == "prenorm" || s.block == "metanext", InvalidArgument, sw, ": \"block\" \"", s.block,
             "\" is not \"prenorm\" or \"metanext\"");
    LR_CHECK(s.block == "prenorm", Unsupported, sw,
             ": \"block\" \"metanext\" is not a block of this model (use \"prenorm\"); MetaNeXt's BatchNorm "
             "blocks are LowrankConvNetForImageClassification's (nn/convnet.h, --preset metanext-tiny)");
    if (i > 0) {
      LR_CHECK(grid.height % 2 == 0 && grid.width % 2 == 0, InvalidArgument, sw,
               ": the 2x2 stride-2 downsampling before this stage needs an even grid, got ", grid.height, "x",
               grid.width, " (image_size / patch_size, halved per stage)");
      grid = {grid.height / 2, grid.width / 2};
    }
    s.grid = grid;
    c.stages.push_back(s);
  }
  // Each stage's layers are the trunk's decoder layers of a config of the stage's width; every
  // config lists all layers' mixers, so a layer's index (and its tensor names) is global.
  Json layer_mixers = Json::array();
  for (const ImageStage& s : c.stages)
    for (int64_t l = 0; l < s.depth; ++l) layer_mixers.push_back(s.mixer);
  for (size_t i = 0; i < c.stages.size(); ++i) {
    const ImageStage& s = c.stages[i];
    Json trunk{{"architectures", {"LowrankMixerForSequenceClassification"}},
               {"model_type", "lowrank_mixer"},
               {"vocab_size", 1},
               {"hidden_size", s.hidden_size},
               {"intermediate_size", s.intermediate_size},
               {"num_hidden_layers", c.num_layers()},
               {"num_attention_heads", s.num_attention_heads},
               {"num_key_value_heads", s.num_attention_heads},
               {"max_position_embeddings", std::max<int64_t>(s.grid.height * s.grid.width, 1)},
               {"rms_norm_eps", c.rms_norm_eps},
               {"layer_mixers", layer_mixers},
               {"num_labels", c.num_labels},
               {"pooling", "mean"}};
    for (const char* key : {"hidden_act", "rope_theta", "mixer_config", "initializer_range"})
      if (json.contains(key)) trunk[key] = json[key];
    // A stage's own options override the shared ones key by key (SOFT's sr_ratio falls stage by
    // stage so that every stage keeps the same landmark grid, as in the paper's configs).
    if (!stage_options[i].empty()) {
      Json shared = trunk.value("mixer_config", Json::object());
      Json& mine = shared[s.mixer];
      if (!mine.is_object()) mine = Json::object();
      for (const auto& [key, value] : stage_options[i].items()) mine[key] = value;
      trunk["mixer_config"] = shared;
    }
    LR_CHECK(s.hidden_size % s.num_attention_heads == 0, InvalidArgument, what, ": stages[", i,
             "]: \"hidden_size\" ", s.hidden_size, " is not a multiple of \"num_attention_heads\" ",
             s.num_attention_heads);
    c.stage_configs.push_back(ModelConfig::from_json(trunk, str(what, ": stages[", i, "]")));
  }
  return c;
}

ImageClassifierConfig ImageClassifierConfig::load(const fs::path& dir) {
  const fs::path path = fs::is_directory(dir) ? dir / "config.json" : dir;
  LR_CHECK(fs::exists(path), NotFound, path.string(), " does not exist");
  return from_json(read_json_file(path), path.string());
}

ImageClassifier::ImageClassifier() = default;
ImageClassifier::ImageClassifier(ImageClassifier&&) noexcept = default;
ImageClassifier& ImageClassifier::operator=(ImageClassifier&&) noexcept = default;
ImageClassifier::~ImageClassifier() = default;

void ImageClassifier::build(const ImageClassifierConfig& c, const LoadOptions& options,
                            const LayerTensorSource& source) {
  config_ = c;
  dtype_ = options.dtype;
  device_ = options.device;
  const int64_t D0 = c.stages.front().hidden_size;
  patch_weight_ = source("model.patch_embed.weight", {D0, c.num_channels, c.patch_size, c.patch_size},
                         ParamInit::kNormal, {});
  patch_bias_ = source("model.patch_embed.bias", {D0}, ParamInit::kZeros, {});
  int64_t layer = 0;
  for (size_t s = 0; s < c.stages.size(); ++s) {
    const int64_t D = c.stages[s].hidden_size;
    if (s > 0) {
      const int64_t prev = c.stages[s - 1].hidden_size;
      const std::string p = str("model.downsample.", s);
      Downsample d;
      d.norm = source(p + ".norm.weight", {prev}, ParamInit::kOnes, {});
      d.weight = source(p + ".weight", {D, prev, 2, 2}, ParamInit::kNormal, {});
      d.bias = source(p + ".bias", {D}, ParamInit::kZeros, {});
      downsample_.push_back(std::move(d));
    }
    stage_layers_.emplace_back();
    for (int64_t l = 0; l < c.stages[s].depth; ++l, ++layer)
      stage_layers_.back().push_back(build_decoder_layer(c.stage_configs[s], layer, source));
    rope_.emplace_back(c.stage_configs[s], device_, dtype_);
  }
  const int64_t last = c.stages.back().hidden_size;
  norm_ = source("model.norm.weight", {last}, ParamInit::kOnes, {});
  at::Tensor w = source(str(kScore, ".weight"), {c.num_labels, last}, ParamInit::kNormal, {});
  score_ = std::make_unique<LinearSlot>(kScore, std::make_shared<DenseOperator>(std::move(w)));
}

ImageClassifier ImageClassifier::load(const fs::path& dir, const LoadOptions& options) {
  const ImageClassifierConfig config = ImageClassifierConfig::load(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  std::string files;
  for (const fs::path& f : ckpt.files()) files += str(files.empty() ? "" : ", ", f.string());
  std::set<std::string> used;
  LayerTensorSource source = [&](const std::string& name, std::vector<int64_t> shape, ParamInit,
                                 const at::Tensor&) {
    LR_CHECK(ckpt.contains(name), NotFound, "tensor \"", name, "\" is missing from the checkpoint (", files,
             ")");
    const TensorInfo& info = ckpt.info(name);
    LR_CHECK(info.shape == shape, InvalidArgument, "tensor \"", name, "\" in ", files, " has shape ",
             at::IntArrayRef(info.shape), ", expected ", at::IntArrayRef(shape), " from config.json");
    used.insert(name);
    return ckpt.load(name, options.dtype).to(options.device);
  };
  ImageClassifier model;
  model.build(config, options, source);
  for (const std::string& name : ckpt.names())
    if (!used.contains(name)) log::warn(dir.string(), ": tensor ", name, " is not used by ", kArchitecture);
  return model;
}

ImageClassifier ImageClassifier::random(const ImageClassifierConfig& config, uint64_t seed,
                                        const LoadOptions& options) {
  double std_dev = 0.02;
  if (auto it = config.raw.find("initializer_range"); it != config.raw.end() && it->is_number())
    std_dev = it->get<double>();
  at::Generator gen = at::detail::createCPUGenerator(seed);
  LayerTensorSource source = [&](const std::string&, std::vector<int64_t> shape, ParamInit init,
                                 const at::Tensor& value) {
    return initial_tensor(
               init, shape, value, options.dtype,
               [&](at::IntArrayRef size) {
                 return at::empty(size, at::TensorOptions().dtype(at::kFloat)).normal_(0.0, std_dev, gen);
               })
        .to(options.device);
  };
  ImageClassifier model;
  model.build(config, options, source);
  return model;
}

void ImageClassifier::save(const fs::path& dir, std::optional<at::ScalarType> dtype) const {
  save_model_directory(dir, config_.raw, named_tensors(), dtype.value_or(dtype_));
}

at::Tensor ImageClassifier::hidden_states(const at::Tensor& pixels) const {
  const ImageClassifierConfig& c = config_;
  LR_CHECK(pixels.dim() == 4 && pixels.size(1) == c.num_channels && pixels.size(2) == c.image_height &&
               pixels.size(3) == c.image_width,
           InvalidArgument, "pixels must be [batch, ", c.num_channels, ", ", c.image_height, ", ",
           c.image_width, "] (num_channels, image_size), got ", pixels.sizes());
  const int64_t B = pixels.size(0);
  const at::Tensor x = pixels.to(device_).to(dtype_);
  // [B, D, H/p, W/p] -> [B, T, D], row-major over the grid.
  at::Tensor h =
      at::conv2d(x, patch_weight_, patch_bias_, {c.patch_size, c.patch_size}).flatten(2).transpose(1, 2);
  for (size_t s = 0; s < c.stages.size(); ++s) {
    const Grid2d grid = c.stages[s].grid;
    const ModelConfig& sc = c.stage_configs[s];
    if (s > 0) {
      const Downsample& d = downsample_[s - 1];
      const Grid2d before = c.stages[s - 1].grid;
      const at::Tensor normed = rms_norm(h, d.norm, c.rms_norm_eps)
                                    .transpose(1, 2)
                                    .reshape({B, h.size(2), before.height, before.width});
      h = at::conv2d(normed, d.weight, d.bias, {2, 2}).flatten(2).transpose(1, 2);
    }
    const int64_t T = grid.height * grid.width;
    MixerContext context;
    context.positions =
        at::arange(T, at::TensorOptions().dtype(at::kLong).device(device_)).unsqueeze(0).expand({B, T});
    std::tie(context.cos, context.sin) = rope_[s].cos_sin(context.positions, dtype_);
    const AttentionMask mask = make_attention_mask({}, false, 0, T, 0, device_);
    context.mask = &mask;
    context.grid = grid;
    for (const auto& layer : stage_layers_[s]) h = decoder_layer_forward(*layer, sc, h, context);
  }
  return rms_norm(h, norm_, c.rms_norm_eps);
}

at::Tensor ImageClassifier::pooled(const at::Tensor& pixels) const {
  return hidden_states(pixels).mean(1);
}

at::Tensor ImageClassifier::forward(const at::Tensor& pixels) const {
  return score_->forward(pooled(pixels));
}

std::vector<LinearSlot*> ImageClassifier::slots() {
  std::vector<LinearSlot*> out;
  for (auto& stage : stage_layers_)
    for (auto& l : stage) {
      for (LinearSlot* s : l->mixer->slots()) out.push_back(s);
      for (LinearSlot* s : {&l->gate_proj, &l->up_proj, &l->down_proj}) out.push_back(s);
    }
  out.push_back(score_.get());
  return out;
}

NamedTensors ImageClassifier::named_tensors() const {
  NamedTensors out;
  out.emplace_back("model.patch_embed.weight", patch_weight_);
  out.emplace_back("model.patch_embed.bias", patch_bias_);
  int64_t layer = 0;
  for (size_t s = 0; s < stage_layers_.size(); ++s) {
    if (s > 0) {
      const std::string p = str("model.downsample.", s);
      out.emplace_back(p + ".norm.weight", downsample_[s - 1].norm);
      out.emplace_back(p + ".weight", downsample_[s - 1].weight);
      out.emplace_back(p + ".bias", downsample_[s - 1].bias);
    }
    for (const auto& l : stage_layers_[s])
      for (auto& named : decoder_layer_tensors(*l, layer++)) out.push_back(std::move(named));
  }
  out.emplace_back("model.norm.weight", norm_);
  for (auto& [n, t] : score_->base().tensors()) out.emplace_back(str(kScore, ".", n), t);
  return out;
}

std::vector<ParamGroup> ImageClassifier::param_groups() const {
  std::vector<ParamGroup> out;
  for (const auto& stage : stage_layers_)
    for (const auto& l : stage)
      for (ParamGroup& g : l->mixer->param_groups()) out.push_back(std::move(g));
  return out;
}

}  // namespace lowrank::nn
