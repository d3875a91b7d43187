// MatryoshkaKV: PCA-initialised orthogonal projections of the KV cache; see matryoshka_kv.h.
#include "lowrank/compress/matryoshka_kv.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "lowrank/compress/format.h"
#include "lowrank/compress/matryoshka_kv_train.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/nn/attention.h"

namespace lowrank::compress {

namespace fs = std::filesystem;

namespace {

// A KV store that keeps nothing: every step is a fresh window (no past), and update() adds the
// step's rotated keys and values to the layer's statistics before handing them back to attention.
class CapturingKVStore final : public nn::KVStore {
 public:
  CapturingKVStore(std::vector<KVStatistics>& stats, int64_t batch)
      : stats_(stats), batch_(batch), valid_count_(at::zeros({batch}, at::kLong)) {}
  int64_t batch() const override { return batch_; }
  int64_t num_layers() const override { return static_cast<int64_t>(stats_.size()); }
  int64_t length() const override { return 0; }
  bool has_padding() const override { return false; }
  const at::Tensor& valid_count() const override { return valid_count_; }
  at::Tensor begin(int64_t new_positions, const at::Tensor&) override {
    return at::ones({batch_, new_positions}, at::kBool);
  }
  std::pair<at::Tensor, at::Tensor> update(int64_t layer, const at::Tensor& k, const at::Tensor& v) override {
    KVStatistics& s = stats_.at(static_cast<size_t>(layer));
    auto add = [](at::Tensor& sum, at::Tensor& outer, const at::Tensor& x) {
      // [B, n_kv, T, D] -> [n_kv, B·T, D]
      const at::Tensor rows =
          x.detach().to(at::kDouble).cpu().transpose(0, 1).reshape({x.size(1), -1, x.size(3)});
      sum += rows.sum(1);
      outer += at::bmm(rows.transpose(1, 2), rows);
    };
    add(s.key_sum, s.key_outer, k);
    add(s.value_sum, s.value_outer, v);
    s.tokens += k.size(0) * k.size(2);
    return {k, v};
  }
  void commit() override {}

 private:
  std::vector<KVStatistics>& stats_;
  int64_t batch_;
  at::Tensor valid_count_;
};

at::Tensor mean_of(const at::Tensor& sum, int64_t n) {
  return sum / static_cast<double>(std::max<int64_t>(n, 1));
}

at::Tensor covariance_of(const at::Tensor& sum, const at::Tensor& outer, int64_t n) {
  const at::Tensor mu = mean_of(sum, n);
  return outer / static_cast<double>(std::max<int64_t>(n, 1)) - mu.unsqueeze(2) * mu.unsqueeze(1);
}

std::string tensor_name(size_t layer, const char* what) {
  return str("model.layers.", layer, ".self_attn.matryoshka_kv.", what);
}

void check_all_attention(nn::Model& model) {
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l)
    LR_CHECK(model.attention(l) != nullptr, InvalidArgument,
             "matryoshka_kv compresses attention caches: layer ", l, "'s mixer is not attention");
}

}  // namespace

at::Tensor calibration_windows(const at::Tensor& tokens, const CalibrationOptions& options) {
  LR_CHECK(tokens.dim() == 1 && tokens.size(0) >= options.seq_len + 1, InvalidArgument,
           "calibration needs at least ", options.seq_len + 1, " tokens, got ",
           tokens.dim() == 1 ? tokens.size(0) : 0);
  const int64_t n = tokens.size(0);
  const int64_t span = options.seq_len + 1;
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < options.samples; ++i)
    rows.push_back(tokens.narrow(0, options.samples == 1 ? 0 : i * (n - span) / (options.samples - 1), span));
  return at::stack(rows);
}

at::Tensor KVStatistics::key_mean() const {
  return mean_of(key_sum, tokens);
}
at::Tensor KVStatistics::value_mean() const {
  return mean_of(value_sum, tokens);
}
at::Tensor KVStatistics::key_covariance() const {
  return covariance_of(key_sum, key_outer, tokens);
}
at::Tensor KVStatistics::value_covariance() const {
  return covariance_of(value_sum, value_outer, tokens);
}

std::vector<KVStatistics> collect_kv_statistics(const nn::Model& model, const at::Tensor& tokens,
                                                const CalibrationOptions& options) {
  const nn::ModelConfig& c = model.config();
  LR_CHECK(options.samples >= 1 && options.seq_len >= 1 && options.batch_size >= 1, InvalidArgument,
           "calibration: samples ", options.samples, ", seq_len ", options.seq_len, " and batch size ",
           options.batch_size, " must be >= 1");
  LR_CHECK(tokens.dim() == 1 && tokens.size(0) >= options.seq_len + 1, InvalidArgument,
           "calibration needs at least ", options.seq_len + 1, " tokens, got ",
           tokens.dim() == 1 ? tokens.size(0) : 0);
  std::vector<KVStatistics> stats(static_cast<size_t>(c.num_hidden_layers));
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  for (KVStatistics& s : stats) {
    s.key_sum = at::zeros({c.num_key_value_heads, c.head_dim}, f64);
    s.value_sum = at::zeros_like(s.key_sum);
    s.key_outer = at::zeros({c.num_key_value_heads, c.head_dim, c.head_dim}, f64);
    s.value_outer = at::zeros_like(s.key_outer);
  }
  const at::Tensor windows = calibration_windows(tokens, options);
  at::NoGradGuard no_grad;
  for (int64_t b = 0; b < options.samples; b += options.batch_size) {
    const int64_t count = std::min(options.batch_size, options.samples - b);
    CapturingKVStore store(stats, count);
    nn::ForwardOptions forward;
    forward.cache = &store;
    forward.fused_decode = nn::FusedDecode::kOff;
    model.forward(windows.narrow(0, b, count).narrow(1, 0, options.seq_len).to(model.device()), forward);
  }
  return stats;
}

at::Tensor pca_basis(const at::Tensor& covariance) {
  auto [eigenvalues, eigenvectors] = at::linalg_eigh(covariance.to(at::kDouble));
  at::Tensor basis = eigenvectors.flip({-1}).contiguous();  // eigh sorts ascending
  const at::Tensor sign = at::linalg_det(basis).sign();
  const at::Tensor flip = at::where(sign.lt(0), -1.0, 1.0).to(at::kDouble);
  basis.select(-1, 0).mul_(flip.unsqueeze(-1));
  return basis;
}

std::vector<MatryoshkaKVLayer> pca_init(const std::vector<KVStatistics>& stats, int64_t rank) {
  std::vector<MatryoshkaKVLayer> layers;
  for (const KVStatistics& s : stats) {
    LR_CHECK(s.tokens > 0, InvalidArgument, "matryoshka_kv: no calibration tokens reached a layer");
    const int64_t n_kv = s.key_sum.size(0), D = s.key_sum.size(1);
    LR_CHECK(rank >= 1 && rank <= D, InvalidArgument, "matryoshka_kv: rank ", rank, " must be in [1, ", D,
             "]");
    MatryoshkaKVLayer layer;
    layer.key_basis = pca_basis(s.key_covariance());
    layer.value_basis = pca_basis(s.value_covariance());
    layer.key_mean = s.key_mean();
    layer.value_mean = s.value_mean();
    layer.key_ranks.assign(static_cast<size_t>(n_kv), rank);
    layer.value_ranks.assign(static_cast<size_t>(n_kv), rank);
    layers.push_back(std::move(layer));
  }
  return layers;
}

int64_t kv_rank_for_ratio(int64_t head_dim, double kv_ratio) {
  LR_CHECK(std::isfinite(kv_ratio) && kv_ratio >= 0 && kv_ratio < 1, InvalidArgument, "--kv-ratio ", kv_ratio,
           " must be in [0, 1) (the fraction of the KV cache removed)");
  const auto r = static_cast<int64_t>(std::llround(static_cast<double>(head_dim) * (1.0 - kv_ratio)));
  return std::clamp<int64_t>(r, 1, head_dim);
}

void install_kv_compression(nn::Model& model, const std::vector<MatryoshkaKVLayer>& layers) {
  const nn::ModelConfig& c = model.config();
  LR_CHECK(static_cast<int64_t>(layers.size()) == c.num_hidden_layers, InvalidArgument,
           "matryoshka_kv: ", layers.size(), " layers of projections for a model of ", c.num_hidden_layers);
  check_all_attention(model);
  const auto options = at::TensorOptions().dtype(model.dtype()).device(model.device());
  for (size_t l = 0; l < layers.size(); ++l) {
    const MatryoshkaKVLayer& layer = layers[l];
    auto truncated = [&](const at::Tensor& basis, const std::vector<int64_t>& ranks, const char* what) {
      LR_CHECK(basis.dim() == 3 && basis.size(0) == c.num_key_value_heads && basis.size(1) == c.head_dim &&
                   basis.size(2) == c.head_dim && static_cast<int64_t>(ranks.size()) == c.num_key_value_heads,
               InvalidArgument, "matryoshka_kv: layer ", l, "'s ", what, " basis ", basis.sizes(), " with ",
               ranks.size(), " ranks does not fit ", c.num_key_value_heads, " KV heads of dimension ",
               c.head_dim);
      int64_t width = 0;
      for (size_t h = 0; h < ranks.size(); ++h) {
        LR_CHECK(ranks[h] >= 1 && ranks[h] <= c.head_dim, InvalidArgument, "matryoshka_kv: layer ", l,
                 " head ", h, ": ", what, " rank ", ranks[h], " must be in [1, ", c.head_dim, "]");
        width = std::max(width, ranks[h]);
      }
      at::Tensor kept = basis.narrow(2, 0, width).to(at::kDouble).clone();
      for (size_t h = 0; h < ranks.size(); ++h)
        kept.select(0, static_cast<int64_t>(h)).narrow(1, ranks[h], width - ranks[h]).zero_();
      return kept.to(options).contiguous();
    };
    auto compression = std::make_shared<nn::KVCompression>();
    compression->key_basis = truncated(layer.key_basis, layer.key_ranks, "key");
    compression->value_basis = truncated(layer.value_basis, layer.value_ranks, "value");
    compression->key_mean = layer.key_mean.to(options).contiguous();
    compression->value_mean = layer.value_mean.to(options).contiguous();
    compression->key_ranks = layer.key_ranks;
    compression->value_ranks = layer.value_ranks;
    model.attention(static_cast<int64_t>(l))->set_kv_compression(std::move(compression));
  }
}

KVBytes kv_cache_bytes(nn::Model& model, int64_t batch, int64_t positions, int64_t element_size) {
  const nn::ModelConfig& c = model.config();
  const int64_t per = batch * positions * element_size;
  KVBytes bytes;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const int64_t full = 2 * c.num_key_value_heads * c.head_dim;
    bytes.full += per * full;
    const nn::Attention* attention = model.attention(l);
    const nn::KVCompression* kv = attention ? attention->kv_compression().get() : nullptr;
    if (kv == nullptr) {
      bytes.stored += per * full;
      bytes.exact += per * full;
      continue;
    }
    bytes.stored += per * c.num_key_value_heads * (kv->key_basis.size(2) + kv->value_basis.size(2));
    for (size_t h = 0; h < kv->key_ranks.size(); ++h)
      bytes.exact += per * (kv->key_ranks[h] + kv->value_ranks[h]);
  }
  return bytes;
}

OrderedJson save_kv_compression(const std::vector<MatryoshkaKVLayer>& layers, const fs::path& dir) {
  std::vector<NamedTensor> tensors;
  OrderedJson described = OrderedJson::array();
  for (size_t l = 0; l < layers.size(); ++l) {
    const MatryoshkaKVLayer& layer = layers[l];
    tensors.push_back({tensor_name(l, "key_basis"), layer.key_basis.to(at::kFloat).cpu().contiguous()});
    tensors.push_back({tensor_name(l, "value_basis"), layer.value_basis.to(at::kFloat).cpu().contiguous()});
    tensors.push_back({tensor_name(l, "key_mean"), layer.key_mean.to(at::kFloat).cpu().contiguous()});
    tensors.push_back({tensor_name(l, "value_mean"), layer.value_mean.to(at::kFloat).cpu().contiguous()});
    described.push_back({{"key_ranks", layer.key_ranks}, {"value_ranks", layer.value_ranks}});
  }
  save_safetensors(dir / kMatryoshkaKVFile, tensors);
  return OrderedJson{{"file", kMatryoshkaKVFile}, {"layers", std::move(described)}};
}

std::vector<MatryoshkaKVLayer> load_kv_compression(nn::Model& model, const fs::path& dir,
                                                   const Json& description) {
  const fs::path config_path = dir / kCompressedConfigFile;
  LR_CHECK(description.is_object() && description.contains("layers") && description["layers"].is_array(),
           Corruption, config_path.string(), ": \"matryoshka_kv\" must be an object with a \"layers\" array");
  const fs::path file = dir / kMatryoshkaKVFile;
  LR_CHECK(fs::exists(file), Corruption, file.string(), " is missing (named by ", config_path.string(), ")");
  const Checkpoint ckpt = Checkpoint::open(file);
  const nn::ModelConfig& c = model.config();
  const Json& described = description["layers"];
  LR_CHECK(static_cast<int64_t>(described.size()) == c.num_hidden_layers, Corruption, config_path.string(),
           ": \"matryoshka_kv\" lists ", described.size(), " layers, the model has ", c.num_hidden_layers);
  std::vector<MatryoshkaKVLayer> layers;
  for (size_t l = 0; l < described.size(); ++l) {
    auto read = [&](const char* what, std::vector<int64_t> shape) {
      const std::string name = tensor_name(l, what);
      LR_CHECK(ckpt.contains(name), Corruption, file.string(), ": tensor \"", name, "\" is missing");
      at::Tensor t = ckpt.load(name).to(at::kDouble);
      LR_CHECK(t.sizes().vec() == shape, Corruption, file.string(), ": tensor \"", name, "\" has shape ",
               t.sizes(), ", expected ", at::IntArrayRef(shape));
      return t;
    };
    const int64_t n_kv = c.num_key_value_heads, D = c.head_dim;
    MatryoshkaKVLayer layer;
    layer.key_basis = read("key_basis", {n_kv, D, D});
    layer.value_basis = read("value_basis", {n_kv, D, D});
    layer.key_mean = read("key_mean", {n_kv, D});
    layer.value_mean = read("value_mean", {n_kv, D});
    try {
      layer.key_ranks = described[l].at("key_ranks").get<std::vector<int64_t>>();
      layer.value_ranks = described[l].at("value_ranks").get<std::vector<int64_t>>();
    } catch (const std::exception& e) {
      throw Corruption(str(config_path.string(), ": matryoshka_kv layer ", l, ": ", e.what()));
    }
    layers.push_back(std::move(layer));
  }
  try {
    install_kv_compression(model, layers);
  } catch (const InvalidArgument& e) {
    throw Corruption(str(config_path.string(), ": ", e.what()));
  }
  return layers;
}

RunResult run_matryoshka_kv(const RunOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const CompressOptions& c = o.compress;
  LR_CHECK(!o.model.empty(), InvalidArgument, "--model is required");
  LR_CHECK(fs::is_directory(o.model), NotFound, "--model ", o.model.string(), ": no such directory");
  LR_CHECK(!is_compressed_model(o.model), InvalidArgument, "--model ", o.model.string(),
           " is already compressed; matryoshka_kv starts from a dense model");
  LR_CHECK(!o.calib_data.empty(), InvalidArgument,
           "method matryoshka_kv needs calibration data: give --calib-data (a token dataset directory or a "
           "text file)");
  LR_CHECK(fs::exists(o.calib_data), NotFound, "--calib-data ", o.calib_data.string(),
           ": no such file or directory");
  LR_CHECK(o.eval_data.empty() || fs::exists(o.eval_data), NotFound, "--eval-data ", o.eval_data.string(),
           ": no such file or directory");
  LR_CHECK(o.calib_samples >= 1 && o.seq_len >= 2, InvalidArgument, "--calib-samples ", o.calib_samples,
           " and --seq-len ", o.seq_len, " must be >= 1 and >= 2");
  LR_CHECK((c.kv_ratio >= 0) != (c.rank > 0), InvalidArgument,
           "matryoshka_kv takes exactly one of --kv-ratio (in [0, 1)) and --rank (got --kv-ratio ",
           c.kv_ratio, ", --rank ", c.rank, ")");
  LR_CHECK(c.compensation.empty() && c.targets.empty(), InvalidArgument,
           "matryoshka_kv compresses every layer's KV cache: --compensate and --targets do not apply");
  const MatryoshkaTrainOptions train = matryoshka_train_options(c.method_options);
  StagedDirectory staged(o.out);
  nn::Model model = load_model(o.model);
  check_all_attention(model);
  const int64_t D = model.config().head_dim;
  if (c.kv_ratio < 0)
    LR_CHECK(c.rank <= D, InvalidArgument, "--rank ", c.rank, " must be in [1, ", D,
             "] (the head dimension)");
  const int64_t rank = c.kv_ratio >= 0 ? kv_rank_for_ratio(D, c.kv_ratio) : c.rank;

  eval::EvalTokens eval_data;
  if (!o.eval_data.empty())
    eval_data = eval::load_eval_tokens(o.eval_data, o.model, "validation", o.eval_max_tokens);
  auto evaluate = [&]() -> std::optional<double> {
    if (!eval_data.tokens.defined()) return std::nullopt;
    eval::PerplexityOptions p;
    p.seq_len = o.eval_seq_len;
    p.progress = o.progress;
    return eval::perplexity(model, eval_data.tokens, p, eval_data.document_starts).perplexity;
  };
  RunResult result;
  result.perplexity_before = evaluate();

  const eval::EvalTokens calib =
      eval::load_eval_tokens(o.calib_data, o.model, "train", o.calib_samples * (o.seq_len + 1) * 4);
  CalibrationOptions co;
  co.samples = o.calib_samples;
  co.seq_len = o.seq_len;
  std::vector<MatryoshkaKVLayer> layers = pca_init(collect_kv_statistics(model, calib.tokens, co), rank);
  if (train.steps > 0) {
    std::vector<double> losses;
    layers = train_matryoshka_kv(model, layers, calibration_windows(calib.tokens, co), train, &losses);
    log::info("matryoshka_kv: distillation loss ", losses.front(), " -> ", losses.back(), " over ",
              losses.size(), " steps");
  }
  if (train.rank_search) {
    // The budget: the uniform rank's total over every (layer, head, K/V).
    const int64_t heads = 2 * model.config().num_hidden_layers * model.config().num_key_value_heads;
    const at::Tensor windows = calibration_windows(calib.tokens, co);
    layers = greedy_rank_search(
        layers, heads * rank, std::max<int64_t>(1, D / 8),
        [&](const auto& candidate) { return matryoshka_kv_loss(model, candidate, windows, train); });
  }
  install_kv_compression(model, layers);
  result.perplexity_after = evaluate();
  if (result.perplexity_after) log::info("perplexity after: ", *result.perplexity_after);

  // The report's bytes are the KV cache's per position at 16 bits; the weights are unchanged.
  const KVBytes bytes = kv_cache_bytes(model, 1, 1, 2);
  CompressReport& report = result.report;
  report.method = "matryoshka_kv";
  report.bytes_before = bytes.full;
  report.bytes_after = bytes.exact;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  OrderedJson extra{{"method", "matryoshka_kv"}, {"compensation", nullptr}};
  extra["matryoshka_kv"] = save_kv_compression(layers, staged.path());
  save_compressed_model(model, staged.path(), o.model, o.save_dtype, extra);
  result.out = staged.target();
  write_json_file(staged.path() / "compress_report.json", result.to_json());
  staged.commit();
  return result;
}

}  // namespace lowrank::compress
