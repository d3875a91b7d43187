// The finetune pipeline; see finetune.h.
#include "lowrank/adapt/finetune.h"

#include <chrono>
#include <cmath>
#include <functional>
#include <numeric>
#include <optional>
#include <tuple>

#include "lowrank/adapt/loram.h"
#include "lowrank/adapt/model_adapters.h"
#include "lowrank/adapt/petal.h"
#include "lowrank/compress/format.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"
#include "lowrank/core/process.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/prepare.h"
#include "lowrank/data/token_dataset.h"
#include "lowrank/nn/run.h"
#include "lowrank/train/data_parallel.h"
#include "lowrank/train/gradnorm_lorp.h"
#include "lowrank/train/welore.h"

namespace fs = std::filesystem;

namespace lowrank::adapt {
namespace {

// The validation split's perplexity (zeros when the split is empty).
eval::PerplexityResult validation_perplexity(const nn::Model& model, const data::TokenDataset& dataset,
                                             int64_t max_tokens, int64_t seq_len) {
  return eval::split_perplexity(model, dataset, "validation", max_tokens, seq_len)
      .value_or(eval::PerplexityResult{});
}

// Runs one training and records its wall time, steps and final loss in the summary.
train::TrainResult timed_training(FinetuneSummary& s, const std::function<train::TrainResult()>& run) {
  const auto t0 = std::chrono::steady_clock::now();
  train::TrainResult r = run();
  s.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.steps = r.step;
  s.finished = r.finished;
  s.memory = r.memory;
  if (!r.steps.empty()) s.final_loss = r.steps.back().loss;
  return r;
}

void write_summary(const FinetuneOptions& o, const train::TrainerConfig& trainer, FinetuneSummary& s) {
  s.peak_rss_mib = static_cast<double>(peak_rss_bytes()) / (1 << 20);
  OrderedJson summary = s.to_json();
  summary["trainer"] = trainer.to_json();
  summary["corpus"] = o.corpus;
  summary["dtype"] = nn::dtype_name(o.dtype);
  write_json_file(o.out / "finetune.json", summary);
}

// PETAL's validation perplexity: non-overlapping windows of seq_len tokens (as split_perplexity),
// each window scored with its own quality weight; the windows are the interval's units.
eval::PerplexityResult petal_validation(nn::Model& model, const AttachedAdapter& adapter,
                                        const data::TokenDataset& dataset, int64_t max_tokens,
                                        int64_t seq_len, const QualityCalibration& quality) {
  const int64_t n = std::min<int64_t>(dataset.size("validation"), max_tokens);
  eval::PerplexityResult r;
  if (n < 2) return r;
  const at::Tensor tokens = dataset.slice("validation", 0, n);
  std::vector<double> sums;
  std::vector<int64_t> counts;
  constexpr int64_t kBatch = 8;
  for (int64_t start = 0; start + 1 < n;) {
    const int64_t len = std::min(seq_len, n - start);
    std::vector<at::Tensor> rows;
    while (static_cast<int64_t>(rows.size()) < kBatch && start + 1 < n &&
           std::min(seq_len, n - start) == len) {
      rows.push_back(tokens.slice(0, start, start + len));
      start += len;
    }
    const at::Tensor windows = at::stack(rows);
    score_windows(model, adapter, windows, quality);
    const at::Tensor nll = window_losses(model, windows) * static_cast<double>(len - 1);
    for (int64_t i = 0; i < nll.size(0); ++i) {
      sums.push_back(nll[i].item<double>());
      counts.push_back(len - 1);
    }
  }
  r.tokens = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  r.nll = std::accumulate(sums.begin(), sums.end(), 0.0) / static_cast<double>(r.tokens);
  r.perplexity = std::exp(r.nll);
  std::tie(r.ci_low, r.ci_high) = eval::perplexity_interval95(sums, counts);
  r.ci_unit = "window";
  r.ci_samples = r.chunks = static_cast<int64_t>(sums.size());
  r.seq_len = r.stride = seq_len;
  return r;
}

}  // namespace

train::TrainTarget training_target(AttachedAdapter& adapter) {
  train::TrainTarget target;
  target.params = adapter.parameters();
  target.weights_file = "adapter_state.safetensors";
  target.before_step = [&adapter](int64_t step) {
    for (auto& [module, layer] : adapter.layers) layer->before_step(step);
  };
  target.after_step = [&adapter](int64_t step, double lr) {
    for (auto& [module, layer] : adapter.layers) layer->after_step(step, lr);
  };
  return target;
}

train::TrainerConfig default_finetune_trainer() {
  train::TrainerConfig c;
  c.steps = 200;
  c.batch_size = 8;
  c.seq_len = 128;
  c.lr = 1e-3;
  c.min_lr = 1e-4;
  c.warmup_steps = 20;
  c.adam.weight_decay = 0;
  c.checkpoint_every = 100;
  return c;
}

OrderedJson FinetuneSummary::to_json() const {
  return {{"adapter_dir", adapter_dir.string()},
          {"method", method},
          {"trainable_parameters", trainable_parameters},
          {"base_parameters", base_parameters},
          {"steps", steps},
          {"finished", finished},
          {"final_loss", final_loss},
          {"train_seconds", train_seconds},
          {"peak_rss_mib", peak_rss_mib},
          {"memory", memory},
          {"base_validation", base_validation.to_json()},
          {"validation", validation.to_json()},
          {"details", details}};
}

FinetuneSummary finetune(const FinetuneOptions& o, dist::Group* group) {
  LR_CHECK(!o.out.empty(), InvalidArgument, "--out: an output directory is required");
  const fs::path tokenizer = o.model / "tokenizer.json";
  LR_CHECK(fs::is_regular_file(tokenizer), NotFound, o.model.string(),
           " has no tokenizer.json, which finetune needs to tokenize the corpus");
  Json config_json = o.config;
  if (!config_json.contains("target_modules")) config_json["target_modules"] = "all-linear";
  AdapterConfig config = AdapterConfig::from_json(config_json, "--config");
  config.method = o.method;
  const bool full = o.method == "full";
  const bool welore = o.method == "welore";
  if (!full && !welore) (void)registry().factory(o.method);  // unknown methods fail before any work
  Json welore_source;
  if (welore) welore_source = train::check_welore_directory(o.model);
  // LoRAM's options (loram.h) and PETAL's quality options are checked before any work too.
  LR_CHECK(
      o.method == "loram" || !config.options.contains("loram_keep"), InvalidArgument,
      "lowrank_options.loram_keep is no longer read by --method ", o.method,
      ": train on a pruned copy with --method loram (options criterion, keep, mlp_keep, attn_keep, ...)");
  std::optional<LoramOptions> loram;
  if (o.method == "loram") loram = LoramOptions::from_config(config);
  const bool petal = o.method == "petal";
  if (petal) (void)calibrate_quality(at::zeros({1}, at::kDouble), petal_threshold(config));
  const int64_t quality_windows = petal ? petal_calibration_windows(config) : 0;
  // So do an unknown optimizer and a bad optimizer flag or option (rank, update_gap, ...).
  train::TrainerConfig trainer = o.trainer;
  train::check_gradnorm_lorp_pairing(o.optimizer.name, "--method", o.method, "dora");
  (void)train::apply_optimizer_request(o.optimizer, trainer);
  trainer.validate();
  LR_CHECK(o.dtype == at::kFloat || o.dtype == at::kBFloat16 || o.dtype == at::kHalf, InvalidArgument,
           "--dtype: finetune trains in float32, bfloat16 or float16, not ", nn::dtype_name(o.dtype));
  LR_CHECK(o.dtype == at::kFloat || trainer.autocast.empty(), InvalidArgument, "--autocast ",
           trainer.autocast, " runs a float32 model's forward passes in the half type; --dtype ",
           nn::dtype_name(o.dtype), " makes the weights themselves half (pure half precision): choose one");
  const int world = group ? group->size() : 1, rank = group ? group->rank() : 0;
  train::check_data_parallel_config(trainer, world, o.zero);
  LR_CHECK(world == 1 || !loram, Unsupported, "--method loram on ", world,
           " ranks: its alignment run is not data-parallel yet; run it in one process");
  const train::DataParallel parallel =
      group ? train::make_data_parallel(group, o.bucket_bytes, o.zero,
                                        {{"finetune method", o.method},
                                         {"adapter config", config_json.dump()},
                                         {"base model config", read_text_file(o.model / "config.json")},
                                         {"corpus", o.corpus}})
            : train::DataParallel{};
  const train::DataParallel* dp = group ? &parallel : nullptr;
  // --resume, or a torchrun restart with a checkpoint to continue from.
  const bool resume = train::resume_after_restart(group, o.out / "run", o.resume);

  // 1. Dataset, tokenized with the model's tokenizer (by rank 0; the other ranks wait for it).
  fs::create_directories(o.out);
  if (rank != 0) group->barrier();
  const data::TokenDataset dataset = data::cached_dataset({.corpus = o.corpus,
                                                           .tokenizer = tokenizer,
                                                           .out = o.out / "dataset",
                                                           .seed = trainer.seed,
                                                           .max_documents = o.max_documents},
                                                          "finetune");
  const train::TokenStream stream = train::TokenStream::from_dataset(dataset, "train");
  if (rank == 0 && group) group->barrier();

  // 2. The frozen base and the adapter. A compressed base (compress/format.h) loads with its
  // operators: LoRA over an INT4 or a factored + INT4 base (QLoRA-style), WeLore's factors.
  nn::Model model = compress::load_model(o.model, {o.dtype});
  FinetuneSummary s;
  s.method = o.method;
  for (const auto& [name, t] : model.named_tensors()) s.base_parameters += t.numel();
  if (rank == 0) s.base_validation = validation_perplexity(model, dataset, o.eval_tokens, trainer.seq_len);
  if (full) {
    // Full fine-tuning, the baseline every adapter is compared with: every tensor trained, the
    // result written as an HF model directory in OUT/model.
    s.trainable_parameters = s.base_parameters;
    const train::TrainResult r =
        timed_training(s, [&] { return train::train(model, stream, trainer, o.out / "run", resume, dp); });
    if (!r.finished || rank != 0) return s;        // rank 0 alone writes the result
    if (compress::is_compressed_model(o.model)) {  // its operators, trained, in the same format
      fs::remove_all(o.out / "model");
      StagedDirectory staged(o.out / "model");
      compress::save_compressed_model(
          model, staged.path(), o.model, at::kFloat,
          {{"method",
            read_json_file(o.model / compress::kCompressedConfigFile).value("method", std::string())},
           {"finetuned", {{"method", "full"}, {"steps", s.steps}}}});
      staged.commit();
    } else {
      model.save(o.out / "model", at::kFloat);
    }
    std::filesystem::copy_file(tokenizer, o.out / "model" / "tokenizer.json",
                               std::filesystem::copy_options::overwrite_existing);
    s.adapter_dir = o.out / "model";
    s.validation = validation_perplexity(model, dataset, o.eval_tokens, trainer.seq_len);
    write_summary(o, trainer, s);
    return s;
  }
  if (welore) {
    // WeLore (train/welore.h): the low-rank components' U, V (and the norm gains, as the
    // reference) train in place; the result is a compressed directory of the same format in
    // OUT/model.
    const train::WeLoreFinetuneOptions wo{.train_norms = config.option<bool>("train_norms", true)};
    train::TrainTarget target = train::welore_target(model, wo);
    const train::WeLoreComponents components = train::welore_components(model);
    for (const auto& [name, t] : target.params) s.trainable_parameters += t.numel();
    s.details["welore"] = components.to_json();
    s.details["welore"]["train_norms"] = wo.train_norms;
    log::info("finetune: welore trains ", components.lrc.size(), " low-rank components (",
              components.nlrc.size(), " dense ones frozen): ", s.trainable_parameters, " parameters");
    const train::TrainResult r = timed_training(
        s, [&] { return train::train(model, target, stream, trainer, o.out / "run", resume, dp); });
    if (!r.finished || rank != 0) return s;
    OrderedJson extra = OrderedJson::object();
    for (const auto& [key, value] : welore_source.items())
      if (key != "slots" && key != "format" && key != "version") extra[key] = value;
    extra["finetuned"] = {{"method", "welore"}, {"steps", s.steps}, {"train_norms", wo.train_norms}};
    {
      fs::remove_all(o.out / "model");  // this command's own output of an earlier run
      StagedDirectory staged(o.out / "model");
      compress::save_compressed_model(model, staged.path(), o.model, at::kFloat, extra);
      staged.commit();
    }
    s.adapter_dir = o.out / "model";
    s.validation = validation_perplexity(model, dataset, o.eval_tokens, trainer.seq_len);
    write_summary(o, trainer, s);
    return s;
  }
  std::map<std::string, at::Tensor> gradients;
  if (registry().factory(o.method).needs_gradient) {
    // The initialisation batches come from a sampler of their own (seed + 1), so the training
    // windows are those of any other method with the same seed.
    train::WindowSampler init_sampler(trainer.seed + 1, stream.size, trainer.seq_len + 1);
    const int64_t batches = config.option<int64_t>("init_batches", 8);
    log::info("finetune: ", o.method, " initialisation from the gradient of ", batches, " batches");
    gradients = slot_gradients(
        model, config,
        [&](const nn::Model& m) {
          return train::lm_loss(
                     m, train::sample_windows(stream, init_sampler, trainer.batch_size, trainer.seq_len)) /
                 static_cast<double>(batches);
        },
        batches);
  }
  // LoRAM (loram.h): the adapter is trained on a pruned copy (calibration windows from a sampler
  // of their own, seed + 2), aligned first by align_steps of plain LM training.
  std::optional<PrunedModel> pruned;
  if (loram) {
    train::WindowSampler calibration_sampler(trainer.seed + 2, stream.size, trainer.seq_len + 1);
    const at::Tensor calibration =
        train::sample_windows(stream, calibration_sampler, loram->calibration_windows, trainer.seq_len);
    pruned = prune_for_loram(model, *loram, calibration, trainer.seed);
    const nn::ModelConfig& pc = pruned->model.config();
    log::info("finetune: LoRAM (", loram->criterion, "): training on a pruned copy with ",
              pc.intermediate_size, " of ", model.config().intermediate_size, " MLP channels and ",
              pc.num_key_value_heads, " of ", model.config().num_key_value_heads, " KV heads per layer");
    s.details["loram"] = {{"criterion", loram->criterion},
                          {"intermediate_size", pc.intermediate_size},
                          {"num_key_value_heads", pc.num_key_value_heads},
                          {"align_steps", loram->align_steps}};
    if (loram->align_steps > 0) {
      train::TrainerConfig align = trainer;
      align.steps = loram->align_steps;
      align.lr = loram->align_lr;
      align.min_lr = std::min(trainer.min_lr, align.lr);
      align.warmup_steps = std::min(trainer.warmup_steps, std::max<int64_t>(1, align.steps / 10));
      align.optimizer = "adamw";  // the authors' alignment: AdamW on every tensor but lm_head
      align.optimizer_options = Json::object();
      align.stop_after = 0;
      std::optional<data::TokenDataset> align_dataset;
      if (!loram->align_data.empty())
        align_dataset = data::cached_dataset({.corpus = loram->align_data,
                                              .tokenizer = tokenizer,
                                              .out = o.out / "align_dataset",
                                              .seed = trainer.seed,
                                              .max_documents = o.max_documents},
                                             "finetune (LoRAM alignment)");
      const train::TokenStream align_stream =
          align_dataset ? train::TokenStream::from_dataset(*align_dataset, "train") : stream;
      log::info("finetune: LoRAM: aligning the pruned copy with ", align.steps, " steps of LM training");
      const train::TrainResult ar =
          align_pruned_model(*pruned, align_stream, align, o.out / "align", o.resume);
      if (!ar.steps.empty()) {
        s.details["loram"]["align_first_loss"] = ar.steps.front().loss;
        s.details["loram"]["align_final_loss"] = ar.steps.back().loss;
      }
    }
  }
  nn::Model& train_model = pruned ? pruned->model : model;
  AttachedAdapter adapter = create_adapter(train_model, "default", config, trainer.seed, gradients);
  s.trainable_parameters = adapter.num_parameters();
  log::info("finetune: ", o.method, " with ", s.trainable_parameters, " trainable parameters (",
            100.0 * static_cast<double>(s.trainable_parameters) / static_cast<double>(s.base_parameters),
            "% of the base)");

  // 3. Training: only the adapter's tensors; checkpoints hold them raw (adapter_state.safetensors).
  train::TrainTarget target = training_target(adapter);
  // PETAL (petal.h): each window's quality weight from the base model's loss on it, with bounds
  // fixed by the windows of a calibration sampler of its own (seed + 3).
  std::optional<QualityCalibration> quality;
  if (petal) {
    train::WindowSampler quality_sampler(trainer.seed + 3, stream.size, trainer.seq_len + 1);
    const at::Tensor windows =
        train::sample_windows(stream, quality_sampler, quality_windows, trainer.seq_len);
    quality = calibrate_quality(reference_losses(train_model, adapter, windows), petal_threshold(config));
    s.details["petal"] = {
        {"loss_min", quality->loss_min}, {"loss_max", quality->loss_max}, {"threshold", quality->threshold}};
    target.before_forward = [&](const at::Tensor& w) { score_windows(train_model, adapter, w, *quality); };
  }
  adapter.set_training(true);
  const train::TrainResult r = timed_training(
      s, [&] { return train::train(train_model, target, stream, trainer, o.out / "run", resume, dp); });
  adapter.set_training(false);
  if (!r.finished || rank != 0) return s;

  // 4. The adapter directory and the adapted model's validation perplexity.
  for (auto& [module, layer] : adapter.layers) layer->before_step(-1);  // evaluation form (DyLoRA: full rank)
  if (pruned) adapter = recover_adapter(model, adapter, *pruned, "default");
  save_adapter(adapter, o.out);
  s.adapter_dir = o.out;
  s.validation = quality ? petal_validation(model, adapter, dataset, o.eval_tokens, trainer.seq_len, *quality)
                         : validation_perplexity(model, dataset, o.eval_tokens, trainer.seq_len);
  write_summary(o, trainer, s);
  return s;
}

}  // namespace lowrank::adapt
