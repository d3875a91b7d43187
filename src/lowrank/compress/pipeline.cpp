// The compress job and dense export (compress/pipeline.h).
#include "lowrank/compress/pipeline.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "lowrank/analysis/spectra.h"
#include "lowrank/compress/format.h"
#include "lowrank/compress/matryoshka_kv.h"
#include "lowrank/compress/pela.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"
#include "lowrank/core/svg.h"
#include "lowrank/eval/perplexity.h"

namespace lowrank::compress {

namespace fs = std::filesystem;

namespace {

std::optional<double> evaluate(const nn::Model& model, const eval::EvalTokens& data, const RunOptions& o) {
  if (!data.tokens.defined()) return std::nullopt;
  eval::PerplexityOptions p;
  p.seq_len = o.eval_seq_len;
  p.progress = o.progress;
  return eval::perplexity(model, data.tokens, p, data.document_starts).perplexity;
}

}  // namespace

OrderedJson RunResult::to_json() const {
  OrderedJson j;
  j["out"] = out.string();
  j["perplexity_before"] = perplexity_before ? OrderedJson(*perplexity_before) : OrderedJson(nullptr);
  j["perplexity_after"] = perplexity_after ? OrderedJson(*perplexity_after) : OrderedJson(nullptr);
  j["report"] = report.to_json();
  if (!pela.is_null()) j["pela"] = pela;
  return j;
}

RunResult run(const RunOptions& o) {
  if (o.compress.method == "matryoshka_kv") return run_matryoshka_kv(o);  // compresses the cache, not slots
  // Everything that can be checked before work.
  LR_CHECK(!o.model.empty(), InvalidArgument, "--model is required");
  LR_CHECK(fs::is_directory(o.model), NotFound, "--model ", o.model.string(), ": no such directory");
  LR_CHECK(!is_compressed_model(o.model) || o.compress.method == "rtn", InvalidArgument, "--model ",
           o.model.string(),
           " is already compressed; compress its dense export (lowrank export --dense), or quantise its "
           "low-rank factors with --method rtn");
  const CalibrationNeeds needs = calibration_needs(o.compress);
  LR_CHECK(!needs.any || !o.calib_data.empty(), InvalidArgument, "method ", o.compress.method,
           o.compress.compensation == "eora" ? " with EoRA compensation" : "",
           " needs calibration data: give --calib-data (a token dataset directory or a text file)");
  LR_CHECK(o.calib_data.empty() || fs::exists(o.calib_data), NotFound, "--calib-data ", o.calib_data.string(),
           ": no such file or directory");
  LR_CHECK(o.eval_data.empty() || fs::exists(o.eval_data), NotFound, "--eval-data ", o.eval_data.string(),
           ": no such file or directory");
  const bool pela = o.compress.method == "pela";
  LR_CHECK(
      !pela || !o.distill_data.empty(), InvalidArgument,
      "pela needs data for its intermediate pre-training: give --distill-data (a token dataset directory "
      "or a text file)");
  LR_CHECK(pela || (o.distill_data.empty() && o.distill_steps == 0), InvalidArgument,
           "--distill-data and --distill-steps are options of --method pela");
  LR_CHECK(o.distill_data.empty() || fs::exists(o.distill_data), NotFound, "--distill-data ",
           o.distill_data.string(), ": no such file or directory");
  LR_CHECK(o.distill_steps >= 0, InvalidArgument, "--distill-steps ", o.distill_steps, " must be >= 0");
  LR_CHECK(o.calib_samples >= 1 && o.seq_len >= 2, InvalidArgument, "--calib-samples ", o.calib_samples,
           " and --seq-len ", o.seq_len, " must be >= 1 and >= 2");
  StagedDirectory staged(o.out);

  // A compressed model loads with its operators: rtn over a factored one quantises its factors.
  nn::Model model = load_model(o.model);
  validate(model, o.compress, nullptr, /*stats_pending=*/true);

  eval::EvalTokens eval_data;
  if (!o.eval_data.empty())
    eval_data = eval::load_eval_tokens(o.eval_data, o.model, "validation", o.eval_max_tokens);
  RunResult result;
  result.perplexity_before = evaluate(model, eval_data, o);
  if (result.perplexity_before) log::info("perplexity before: ", *result.perplexity_before);

  // With calibration data the Gram is always collected: the report's output errors need it.
  std::optional<CalibrationStatistics> stats;
  std::optional<CalibrationSource> source;  // the tokens too: SVD-LLM's update calibrates per layer
  if (!o.calib_data.empty()) {
    const int64_t want = o.calib_samples * (o.seq_len + 1) * 4;  // enough for spread-out windows
    const eval::EvalTokens calib = eval::load_eval_tokens(o.calib_data, o.model, "train", want);
    CalibrationOptions c;
    c.samples = o.calib_samples;
    c.seq_len = o.seq_len;
    c.gram = true;
    c.fisher = needs.fisher;
    c.keep_inputs = needs.inputs;
    c.progress = o.progress;
    c.slots.clear();
    for (nn::LinearSlot* s : target_slots(model, o.compress)) c.slots.push_back(s->name());
    stats = calibrate(model, calib.tokens, c);
    source = CalibrationSource{calib.tokens, c};
  }

  result.report = compress_model(model, o.compress, stats ? &*stats : nullptr, source ? &*source : nullptr);
  if (pela) {
    const PelaOptions po =
        PelaOptions::from(o.compress.alpha, o.compress.beta, o.distill_steps, o.compress.method_options);
    const fs::path run_dir =
        po.run_dir.empty() ? fs::path(o.out.string() + ".pela-run") : fs::path(po.run_dir);
    const nn::Model teacher = nn::Model::load(o.model);
    const eval::EvalTokens distill = eval::load_eval_tokens(o.distill_data, o.model, "train", 0);
    log::info("pela: intermediate pre-training, ", po.trainer.steps, " steps (alpha ", po.alpha, ", beta ",
              po.beta, ") in ", run_dir.string());
    const PelaResult pr =
        pela_pretrain(model, teacher, train::TokenStream::from_tensor(distill.tokens), po, run_dir);
    LR_CHECK(pr.finished, InvalidArgument, "pela: the intermediate stage stopped at step ", pr.steps,
             " (stop_after); run again to resume it from ", run_dir.string());
    result.pela = pr.to_json();
    result.pela["alpha"] = po.alpha;
    result.pela["beta"] = po.beta;
    result.pela["epsilon"] = po.epsilon;
    result.pela["run_dir"] = run_dir.string();
  }
  result.perplexity_after = evaluate(model, eval_data, o);
  if (result.perplexity_after) log::info("perplexity after: ", *result.perplexity_after);

  OrderedJson extra{{"method", o.compress.method},
                    {"compensation", o.compress.compensation.empty() ? OrderedJson(nullptr)
                                                                     : OrderedJson(o.compress.compensation)}};
  save_compressed_model(model, staged.path(), o.model, o.save_dtype, extra);
  result.out = staged.target();
  write_json_file(staged.path() / "compress_report.json", result.to_json());
  write_file_atomic(staged.path() / "compress_report.svg", report_svg(result.report));
  staged.commit();
  return result;
}

int64_t materialise_stored_slots(nn::Model& model) {
  int64_t n = 0;
  for (nn::LinearSlot* s : model.slots()) {
    if (dynamic_cast<const StoredOperator*>(&s->base()) == nullptr) continue;
    at::NoGradGuard no_grad;
    s->replace_base(
        std::make_shared<nn::DenseOperator>(s->base().dense_weight().contiguous(), s->base().bias()));
    ++n;
  }
  return n;
}

namespace {

// A method that adds a bias to slots that had none (AFM's b₂) leaves a model that Hugging Face's
// Llama holds only with `attention_bias` (q, k, v, o) or `mlp_bias` (gate, up, down) on, for every
// layer: the flags are set and the other slots of the group get zero biases. Returns the keys set.
// Throws Unsupported for another architecture, which has no such flags.
std::vector<std::string> hold_new_biases(nn::Model& model) {
  const nn::ModelConfig& c = model.config();
  const std::map<std::string, std::string> group = {
      {"q_proj", "attention_bias"}, {"k_proj", "attention_bias"}, {"v_proj", "attention_bias"},
      {"o_proj", "attention_bias"}, {"gate_proj", "mlp_bias"},    {"up_proj", "mlp_bias"},
      {"down_proj", "mlp_bias"}};
  std::set<std::string> needed;
  for (nn::LinearSlot* s : model.slots()) {
    const auto g = group.find(analysis::module_type_of(s->name()));
    if (g == group.end() || !s->base().bias().defined()) continue;
    const bool held = g->second == "mlp_bias" ? c.mlp_bias : (g->first == "o_proj" ? c.o_bias : c.qkv_bias);
    if (held) continue;
    LR_CHECK(c.model_type == "llama", Unsupported, "slot ", s->name(),
             " has a bias (added by compression) that ", c.model_type,
             " cannot hold in a dense Hugging Face export; keep the compressed directory, or "
             "compress a Llama model");
    needed.insert(g->second);
  }
  for (nn::LinearSlot* s : model.slots()) {
    const auto g = group.find(analysis::module_type_of(s->name()));
    if (g == group.end() || !needed.contains(g->second) || s->base().bias().defined()) continue;
    const at::Tensor w = s->base().dense_weight();
    s->replace_base(std::make_shared<nn::DenseOperator>(w, at::zeros({w.size(0)}, w.options())));
  }
  return {needed.begin(), needed.end()};
}

}  // namespace

int64_t export_dense(const fs::path& model_dir, const fs::path& out, at::ScalarType dtype) {
  StagedDirectory staged(out);
  nn::Model model = load_model(model_dir);
  const int64_t n = materialise_stored_slots(model);
  const std::vector<std::string> flags = hold_new_biases(model);
  model.save(staged.path(), dtype);
  if (!flags.empty()) {
    Json config = read_json_file(staged.path() / "config.json");
    for (const std::string& key : flags) config[key] = true;
    write_json_file(staged.path() / "config.json", config);
  }
  nn::copy_model_side_files(model_dir, staged.path());
  staged.commit();
  return n;
}

std::string report_svg(const CompressReport& report) {
  static const std::vector<std::string> kModules = {"q_proj",    "k_proj",  "v_proj",    "o_proj",
                                                    "gate_proj", "up_proj", "down_proj", "lm_head"};
  int64_t layers = 1;
  for (const SlotReport& r : report.slots) layers = std::max(layers, analysis::layer_of(r.name) + 1);
  double max_err = 1e-12;
  bool output_errors = false;
  for (const SlotReport& r : report.slots) {
    output_errors = output_errors || r.output_error >= 0;
    max_err = std::max(max_err, r.output_error >= 0 ? r.output_error : r.weight_error);
  }
  const double pw = std::max(480.0, 60.0 * static_cast<double>(layers)), ph = 180, ml = 60, mt = 70, gap = 60;
  Svg svg(ml + pw + 170, mt + 2 * ph + gap + 50);
  svg.text(
      ml, 24,
      str("lowrank compress: ", report.method, report.compensation.empty() ? "" : " + ", report.compensation),
      16, "start", "#111", true);
  svg.text(ml, 44,
           str("parameters kept ", report.params_after, " / ", report.params_before, "; 16-bit bytes kept ",
               report.bytes_after, " / ", report.bytes_before),
           11, "start", "#444");
  const double slot_w = pw / static_cast<double>(layers) / static_cast<double>(kModules.size() + 1);
  auto x_of = [&](const SlotReport& r) {
    const int64_t layer = std::max<int64_t>(analysis::layer_of(r.name), 0);
    const std::string type = analysis::module_type_of(r.name);
    const auto it = std::find(kModules.begin(), kModules.end(), type);
    const double k = static_cast<double>(it - kModules.begin());
    return ml + (static_cast<double>(layer) * static_cast<double>(kModules.size() + 1) + k) * slot_w;
  };
  auto color_of = [&](const SlotReport& r) {
    const auto it = std::find(kModules.begin(), kModules.end(), analysis::module_type_of(r.name));
    return category_color(static_cast<int>(it - kModules.begin()));
  };
  const char* titles[2] = {"kept parameters / dense parameters, per slot",
                           output_errors ? "relative output error ||(W - W') X|| / ||W X||"
                                         : "relative weight error ||W - W'|| / ||W||"};
  for (int panel = 0; panel < 2; ++panel) {
    const double y0 = mt + panel * (ph + gap);
    const double top = panel == 0 ? 1.0 : max_err * 1.1;
    svg.rect(ml, y0, pw, ph, "#fafafa", "#999");
    svg.text(ml, y0 - 8, titles[panel], 12, "start", "#222", true);
    for (int t = 0; t <= 4; ++t) {
      const double f = t / 4.0;
      svg.line(ml, y0 + (1 - f) * ph, ml + pw, y0 + (1 - f) * ph, "#e3e3e3");
      svg.text(ml - 6, y0 + (1 - f) * ph + 4, str(std::round(f * top * 1000) / 1000), 10, "end", "#555");
    }
    for (const SlotReport& r : report.slots) {
      double v = panel == 0 ? static_cast<double>(r.params_after) /
                                  static_cast<double>(std::max<int64_t>(r.params_before, 1))
                            : (r.output_error >= 0 ? r.output_error : r.weight_error);
      v = std::clamp(v / top, 0.0, 1.0);
      svg.rect(x_of(r), y0 + (1 - v) * ph, slot_w * 0.9, v * ph, color_of(r));
    }
    for (int64_t l = 0; l < layers; ++l)
      svg.text(ml + (static_cast<double>(l) * static_cast<double>(kModules.size() + 1) + 3.5) * slot_w,
               y0 + ph + 14, str("layer ", l), 10, "middle", "#555");
  }
  for (size_t k = 0; k < kModules.size(); ++k) {
    svg.rect(ml + pw + 20, mt + 16.0 * static_cast<double>(k), 10, 10, category_color(static_cast<int>(k)));
    svg.text(ml + pw + 36, mt + 16.0 * static_cast<double>(k) + 9, kModules[k], 11);
  }
  return svg.str();
}

}  // namespace lowrank::compress
