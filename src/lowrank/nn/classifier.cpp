// The sequence classifier: the mixer trunk, a pooling and a linear head; see classifier.h.
#include "lowrank/nn/classifier.h"

#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

namespace {

constexpr const char* kScore = "score";

void check_architecture(const ModelConfig& config, const std::string& what) {
  LR_CHECK(config.architecture == Architecture::kLowrankMixerSequenceClassification, InvalidArgument, what,
           ": architecture ", architecture_name(config.architecture), " is not a sequence classifier (",
           architecture_name(Architecture::kLowrankMixerSequenceClassification), ")");
}

}  // namespace

at::Tensor pool_hidden_states(const at::Tensor& h, const at::Tensor& valid, const std::string& pooling) {
  LR_CHECK(h.dim() == 3, InvalidArgument, "pooling: hidden states must be [batch, seq, hidden], got ",
           h.sizes());
  LR_CHECK(pooling == "mean" || pooling == "last", InvalidArgument, "pooling \"", pooling,
           "\" is not \"mean\" or \"last\"");
  const int64_t T = h.size(1);
  if (!valid.defined()) return pooling == "mean" ? h.mean(1) : h.select(1, T - 1);
  LR_CHECK(valid.dim() == 2 && valid.size(0) == h.size(0) && valid.size(1) == T, InvalidArgument,
           "pooling: mask of shape ", valid.sizes(), " for hidden states of shape ", h.sizes());
  const at::Tensor v = valid.to(h.device()).to(at::kBool);
  const at::Tensor counts = v.sum(1);  // [B] int64
  LR_CHECK(counts.min().item<int64_t>() > 0, InvalidArgument,
           "pooling: a sequence has no real token (its attention_mask is all 0)");
  if (pooling == "mean") {
    const at::Tensor w = v.to(h.scalar_type()).unsqueeze(-1);  // [B, T, 1]
    return h.mul(w).sum(1).div(counts.to(h.scalar_type()).unsqueeze(-1));
  }
  // The rightmost valid position: arange · valid peaks there (transformers' argmax rule).
  const at::Tensor index = at::arange(T, at::TensorOptions().dtype(at::kLong).device(h.device()))
                               .unsqueeze(0)
                               .mul(v.to(at::kLong));
  const at::Tensor last = index.argmax(1);  // [B]
  return h.gather(1, last.view({-1, 1, 1}).expand({h.size(0), 1, h.size(2)})).squeeze(1);
}

Json sequence_classifier_config(int64_t vocab_size, int64_t hidden_size, int64_t intermediate_size,
                                int64_t num_layers, int64_t num_heads, int64_t max_positions,
                                const Json& mixer_keys, int64_t num_labels, const std::string& pooling) {
  return Json{{"architectures", Json::array({"LowrankMixerForSequenceClassification"})},
              {"model_type", "lowrank_mixer"},
              {"vocab_size", vocab_size},
              {"hidden_size", hidden_size},
              {"intermediate_size", intermediate_size},
              {"num_hidden_layers", num_layers},
              {"num_attention_heads", num_heads},
              {"num_key_value_heads", num_heads},
              {"max_position_embeddings", max_positions},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 10000.0},
              {"hidden_act", "silu"},
              {"initializer_range", 0.02},
              {"tie_word_embeddings", false},
              {"layer_mixers", mixer_keys.at("layer_mixers")},
              {"mixer_config", mixer_keys.at("mixer_config")},
              {"num_labels", num_labels},
              {"pooling", pooling},
              {"torch_dtype", "float32"}};
}

SequenceClassifier::SequenceClassifier(Model trunk, std::unique_ptr<LinearSlot> score)
    : trunk_(std::move(trunk)), score_(std::move(score)) {}
SequenceClassifier::SequenceClassifier(SequenceClassifier&&) noexcept = default;
SequenceClassifier& SequenceClassifier::operator=(SequenceClassifier&&) noexcept = default;
SequenceClassifier::~SequenceClassifier() = default;

SequenceClassifier SequenceClassifier::load(const fs::path& dir, const LoadOptions& options) {
  const ModelConfig config = ModelConfig::load(dir);
  check_architecture(config, (dir / "config.json").string());
  Model trunk = Model::load(dir, options);
  const Checkpoint ckpt = Checkpoint::open(dir);
  const std::string name = str(kScore, ".weight");
  std::string files;
  for (const fs::path& f : ckpt.files()) files += str(files.empty() ? "" : ", ", f.string());
  LR_CHECK(ckpt.contains(name), NotFound, "tensor \"", name, "\" is missing from the checkpoint (", files,
           ")");
  const TensorInfo& info = ckpt.info(name);
  const std::vector<int64_t> expected{config.num_labels, config.hidden_size};
  LR_CHECK(info.shape == expected, InvalidArgument, "tensor \"", name, "\" in ", files, " has shape ",
           at::IntArrayRef(info.shape), ", expected ", at::IntArrayRef(expected),
           " from config.json (num_labels, hidden_size)");
  at::Tensor w = ckpt.load(name, options.dtype).to(options.device);
  return SequenceClassifier(
      std::move(trunk), std::make_unique<LinearSlot>(kScore, std::make_shared<DenseOperator>(std::move(w))));
}

SequenceClassifier SequenceClassifier::random(const ModelConfig& config, uint64_t seed,
                                              const LoadOptions& options) {
  check_architecture(config, "SequenceClassifier::random");
  Model trunk = Model::random(config, seed, options);
  double std_dev = 0.02;
  if (auto it = config.raw.find("initializer_range"); it != config.raw.end() && it->is_number())
    std_dev = it->get<double>();
  // Its own stream, so that the trunk equals Model::random(config, seed) tensor for tensor.
  at::Generator gen = at::detail::createCPUGenerator(seed ^ 0x73636f7265ull);  // "score"
  at::Tensor w = at::empty({config.num_labels, config.hidden_size}, at::TensorOptions().dtype(at::kFloat));
  w.normal_(0.0, std_dev, gen);
  w = w.to(options.dtype).to(options.device);
  return SequenceClassifier(
      std::move(trunk), std::make_unique<LinearSlot>(kScore, std::make_shared<DenseOperator>(std::move(w))));
}

void SequenceClassifier::save(const fs::path& dir, std::optional<at::ScalarType> dtype) const {
  save_model_directory(dir, config().raw, named_tensors(), dtype.value_or(trunk_.dtype()));
}

at::Tensor SequenceClassifier::pooled(const at::Tensor& input_ids, const at::Tensor& attention_mask) const {
  ForwardOptions options;
  options.attention_mask = attention_mask;
  const at::Tensor h = trunk_.hidden_states(input_ids, options);
  return pool_hidden_states(h, attention_mask, config().pooling);
}

at::Tensor SequenceClassifier::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) const {
  return score_->forward(pooled(input_ids, attention_mask));
}

at::Tensor SequenceClassifier::token_outputs(const at::Tensor& input_ids,
                                             const at::Tensor& attention_mask) const {
  ForwardOptions options;
  options.attention_mask = attention_mask;
  return score_->forward(trunk_.hidden_states(input_ids, options));
}

std::vector<LinearSlot*> SequenceClassifier::slots() {
  std::vector<LinearSlot*> out = trunk_.slots();
  out.push_back(score_.get());
  return out;
}

NamedTensors SequenceClassifier::named_tensors() const {
  NamedTensors out = trunk_.named_tensors();
  for (auto& [n, t] : score_->base().tensors()) out.emplace_back(str(kScore, ".", n), t);
  return out;
}

}  // namespace lowrank::nn
