// The `lowrank pretrain` pipeline: tokenizer, dataset, training, HF export, validation
// perplexity; see pretrain.h.
#include "lowrank/train/pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <tuple>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"
#include "lowrank/data/bpe_trainer.h"
#include "lowrank/data/corpus.h"
#include "lowrank/data/prepare.h"
#include "lowrank/data/tasks/sha256.h"
#include "lowrank/data/token_dataset.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/autocast.h"
#include "lowrank/nn/run.h"
#include "lowrank/nn/slot_shapes.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/classify.h"
#include "lowrank/train/data_parallel.h"
#include "lowrank/train/gradnorm_lorp.h"
#include "lowrank/train/maestro.h"
#include "lowrank/train/parameterization.h"

namespace lowrank::train {
namespace fs = std::filesystem;

namespace {

constexpr const char* kEndOfText = "<|endoftext|>";

}  // namespace

TrainerConfig trainer_preset(int64_t steps, int64_t batch, int64_t seq_len, double lr, int64_t warmup,
                             int64_t checkpoint_every) {
  TrainerConfig c;
  c.steps = steps;
  c.batch_size = batch;
  c.grad_accum = 1;
  c.seq_len = seq_len;
  c.lr = lr;
  c.min_lr = lr / 10;
  c.warmup_steps = warmup;
  c.clip_norm = 1.0;
  c.checkpoint_every = checkpoint_every;
  return c;
}

namespace {

// The cache key of a run: the options as resolved into `c` (the optimizer flags merged into the
// optimizer's options; under plain AdamW, --rank in the parameterisation's).
OrderedJson args_json(const PretrainOptions& o, const TrainerConfig& c) {
  OrderedJson j{{"preset", o.preset},
                {"corpus", o.corpus},
                {"steps", c.steps},
                {"seed", o.seed},
                {"max_documents", o.max_documents},
                {"optimizer", c.optimizer},
                {"optimizer_options", c.optimizer_options}};
  // Only when set, so that the cache key of dense runs stays as before.
  if (c.per_layer_updates) j["per_layer_updates"] = true;
  if (o.lr > 0) j["lr"] = c.lr;
  if (!c.parameterization.empty()) {
    j["parameterization"] = c.parameterization;
    j["parameterization_options"] = c.parameterization_options;
  }
  if (o.batch_size > 0) j["batch_size"] = c.batch_size;
  if (o.seq_len > 0) j["seq_len"] = c.seq_len;
  if (o.device != "cpu") j["device"] = o.device;
  if (!o.autocast.empty()) j["autocast"] = o.autocast;
  if (!o.mixer.empty() || !o.layer_mixers.empty()) {
    j["mixer"] = o.mixer;
    j["layer_mixers"] = o.layer_mixers;
    j["mixer_options"] = o.mixer_options;
  }
  return j;
}

// The slots of a preset's model that a parameterisation or a projecting optimizer touches (its
// attention/MLP projections) as (name, out, in), as a model of the preset's config has them
// (nn::slot_shapes); the vocabulary size does not change them.
std::vector<std::tuple<std::string, int64_t, int64_t>> preset_target_slots(const PretrainPreset& p,
                                                                           const Json& mixers) {
  const nn::ModelConfig config =
      nn::ModelConfig::from_json(preset_model_config(p, p.vocab_size, mixers), "preset " + p.name);
  std::vector<std::tuple<std::string, int64_t, int64_t>> out;
  for (const nn::SlotShape& s : nn::slot_shapes(config))
    if (is_parameterized_slot(s.name)) out.emplace_back(s.name, s.out_features, s.in_features);
  return out;
}

// The loss of the last line of a metrics.jsonl (0 when there is none).
double last_logged_loss(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last.empty() ? 0.0 : json_get<double>(parse_json(last, metrics.string()), "loss", metrics.string());
}

}  // namespace

std::vector<PretrainPreset> pretrain_presets() {
  return {
      {"tiny", 2048, 128, 384, 4, 4, trainer_preset(600, 16, 128, 3e-3, 30, 100),
       "hidden 128, 4 layers, 4 heads, vocab 2048, seq 128; 600 steps of 16 x 128 tokens (minutes on 2 "
       "cores)"},
      {"small", 8192, 256, 768, 6, 8, trainer_preset(3000, 32, 256, 1.5e-3, 100, 250),
       "hidden 256, 6 layers, 8 heads, vocab 8192, seq 256; 3000 steps of 32 x 256 tokens (hours on CPU)"},
      // GaLore's LLaMA-60M (Zhao et al., 2024, Table 11: hidden 512, intermediate 1376, 8 heads,
      // 8 layers, 10K steps of 512 sequences of 256 tokens, 10% warmup) with this project's 8192-token
      // tokenizer instead of T5's 32000 tokens: a GPU preset (--device cuda --autocast bf16).
      {"galore-60m", 8192, 512, 1376, 8, 8, trainer_preset(10000, 512, 256, 1e-3, 1000, 1000),
       "GaLore's LLaMA-60M shape: hidden 512, intermediate 1376, 8 layers, 8 heads, vocab 8192, seq 256; "
       "10000 steps of 512 x 256 tokens (a GPU run)"},
      // Mamba (Gu & Dao, 2023) at the tiny preset's width, depth and schedule.
      {"mamba-tiny", 2048, 128, 256, 4, 1, trainer_preset(600, 16, 128, 3e-3, 30, 100),
       "MambaForCausalLM: hidden 128, 4 layers, state 16, expand 2, vocab 2048, seq 128; the tiny schedule",
       "mamba"},
  };
}

PretrainPreset pretrain_preset(const std::string& name) {
  std::string known;
  for (const PretrainPreset& p : pretrain_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  throw InvalidArgument(str("--preset: unknown preset \"", name, "\" (known: ", known, ")"));
}

Json preset_model_config(const PretrainPreset& p, int64_t vocab_size, const Json& mixer_keys) {
  if (p.architecture == "mamba") {
    LR_CHECK(
        !mixer_keys.is_object(), InvalidArgument, "--preset ", p.name,
        " is a MambaForCausalLM (every layer mamba); --mixer / --layer-mixers apply to the llama presets");
    // transformers' MambaConfig keys (its defaults but the sizes and initializer_range).
    return Json{{"architectures", Json::array({"MambaForCausalLM"})},
                {"model_type", "mamba"},
                {"vocab_size", vocab_size},
                {"hidden_size", p.hidden_size},
                {"num_hidden_layers", p.num_layers},
                {"state_size", 16},
                {"expand", 2},
                {"conv_kernel", 4},
                {"time_step_rank", "auto"},
                {"use_bias", false},
                {"use_conv_bias", true},
                {"layer_norm_epsilon", 1e-5},
                {"residual_in_fp32", true},
                {"hidden_act", "silu"},
                {"initializer_range", 0.02},
                {"tie_word_embeddings", true},
                {"torch_dtype", "float32"}};
  }
  Json config{{"architectures", Json::array({"LlamaForCausalLM"})},
              {"model_type", "llama"},
              {"vocab_size", vocab_size},
              {"hidden_size", p.hidden_size},
              {"intermediate_size", p.intermediate_size},
              {"num_hidden_layers", p.num_layers},
              {"num_attention_heads", p.num_heads},
              {"num_key_value_heads", p.num_heads},
              {"max_position_embeddings", p.trainer.seq_len},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 10000.0},
              {"hidden_act", "silu"},
              {"initializer_range", 0.02},
              {"tie_word_embeddings", true},
              {"torch_dtype", "float32"}};
  if (mixer_keys.is_object()) {
    config["architectures"] = Json::array({"LowrankMixerForCausalLM"});
    config["model_type"] = "lowrank_mixer";
    for (const auto& [key, value] : mixer_keys.items()) config[key] = value;
  }
  return config;
}

OrderedJson PretrainSummary::to_json() const {
  return OrderedJson{{"model_dir", model_dir.string()},
                     {"cached", cached},
                     {"finished", finished},
                     {"steps", steps},
                     {"final_loss", final_loss},
                     {"train_seconds", train_seconds},
                     {"validation", validation.to_json()},
                     {"memory", memory}};
}

PretrainSummary pretrain(const PretrainOptions& o, dist::Group* group) {
  LR_CHECK(!o.out.empty(), InvalidArgument, "--out: an output directory is required");
  PretrainPreset preset = pretrain_preset(o.preset);
  LR_CHECK(o.seq_len >= 0, InvalidArgument, "--seq-len must be positive, got ", o.seq_len);
  if (o.seq_len > 0) preset.trainer.seq_len = o.seq_len;  // the windows and the model's positions
  TrainerConfig tc = preset.trainer;
  if (o.steps > 0) tc.steps = o.steps;
  LR_CHECK(o.batch_size >= 0, InvalidArgument, "--batch-size must be positive, got ", o.batch_size);
  if (o.batch_size > 0) tc.batch_size = o.batch_size;
  const at::Device device = nn::parse_device(o.device);
  tc.autocast = o.autocast;
  nn::check_autocast_device(o.autocast, device);
  LR_CHECK(o.lr >= 0 && std::isfinite(o.lr), InvalidArgument, "--lr must be positive, got ", o.lr);
  if (o.lr > 0) {
    tc.lr = o.lr;
    tc.min_lr = o.lr / 10;
  }
  if (o.checkpoint_every > 0) tc.checkpoint_every = o.checkpoint_every;
  tc.warmup_steps = std::min(tc.warmup_steps, std::max<int64_t>(1, tc.steps / 10));
  tc.seed = o.seed;
  tc.stop_after = o.stop_after;
  // Everything below fails here, before the tokenizer and dataset stages run: a bad
  // parameterisation or optimizer flag, an unknown name, a bad option, and a projection or
  // parameterisation rank larger than a weight it would touch.
  LR_CHECK(o.parameterization_options.is_object(), InvalidArgument,
           "--parameterization-options: expected a JSON object");
  LR_CHECK(!o.parameterization.empty() || o.parameterization_options.empty(), InvalidArgument,
           "--parameterization-options needs --parameterization NAME");
  tc.parameterization = o.parameterization;
  tc.parameterization_options = o.parameterization_options;
  OptimizerRequest optimizer = o.optimizer;
  give_rank_to_parameterization(optimizer, tc.parameterization, tc.parameterization_options);
  check_gradnorm_lorp_pairing(optimizer.name, "--parameterization", tc.parameterization, "gradnormlorp");
  // The mixers: known names, valid options, causal (a language model), before any stage runs.
  LR_CHECK(o.mixer_options.empty() || !o.mixer.empty() || !o.layer_mixers.empty(), InvalidArgument,
           "--mixer-options needs --mixer NAME or --layer-mixers LIST");
  const Json mixers = o.mixer.empty() && o.layer_mixers.empty()
                          ? Json()
                          : mixer_keys(o.mixer, o.layer_mixers, o.mixer_options, preset.num_layers);
  if (mixers.is_object())
    check_mixers(nn::ModelConfig::from_json(preset_model_config(preset, preset.vocab_size, mixers),
                                            "preset " + preset.name),
                 /*need_causal=*/true);
  const auto target_slots = preset_target_slots(preset, mixers);
  if (const auto low_rank = apply_optimizer_request(optimizer, tc))
    check_projection_rank(*low_rank, target_slots);
  if (!tc.parameterization.empty())
    check_parameterization(tc.parameterization, tc.parameterization_options, target_slots);
  tc.validate();
  const int world = group ? group->size() : 1, rank = group ? group->rank() : 0;
  check_data_parallel_config(tc, world, o.zero);
  LR_CHECK(!group || !device.is_cuda(), Unsupported, "data-parallel training on ", o.device,
           " needs the NCCL backend, which this build does not have (CPU ranks use Gloo)");
  const OrderedJson args = args_json(o, tc);
  const fs::path summary_path = o.out / "pretrain.json";
  const fs::path model_dir = o.out / "model";

  // The cache: a complete run with the same arguments.
  if (fs::exists(summary_path)) {
    const Json previous = read_json_file(summary_path);
    if (previous.value("args", Json()) == Json::parse(args.dump()) &&
        fs::exists(model_dir / "model.safetensors")) {
      log::info("pretrain: ", o.out.string(), " already holds this run; skipping (delete it to retrain)");
      PretrainSummary s;
      s.model_dir = model_dir;
      s.cached = true;
      s.finished = true;
      s.steps = json_get<int64_t>(previous, "steps", summary_path.string());
      s.final_loss = json_get<double>(previous, "final_loss", summary_path.string());
      s.train_seconds = json_get<double>(previous, "train_seconds", summary_path.string());
      const Json v = json_get<Json>(previous, "validation", summary_path.string());
      s.validation.perplexity = v.value("perplexity", 0.0);
      s.validation.nll = v.value("nll", 0.0);
      s.validation.tokens = v.value("tokens", int64_t{0});
      s.validation.chunks = v.value("chunks", int64_t{0});
      s.validation.seq_len = v.value("seq_len", int64_t{0});
      s.validation.stride = v.value("stride", int64_t{0});
      s.validation.ci_unit = v.value("ci_unit", std::string("window"));
      s.validation.ci_samples = v.value("ci_samples", s.validation.chunks);
      if (v.contains("ci95")) {
        s.validation.ci_low = v["ci95"][0].get<double>();
        s.validation.ci_high = v["ci95"][1].get<double>();
      }
      return s;
    }
  }
  fs::create_directories(o.out);
  // Rank 0 builds the shared files (tokenizer, dataset); the others wait for them.
  const bool builds = rank == 0;
  if (!builds) group->barrier();

  // 1. Tokenizer.
  const fs::path tokenizer_path = o.out / "tokenizer" / "tokenizer.json";
  if (!fs::exists(tokenizer_path)) {
    log::info("pretrain: training a ", preset.vocab_size, "-token BPE tokenizer on ", o.corpus);
    const data::Corpus corpus = data::read_corpus(o.corpus, o.max_documents);
    std::vector<std::string> texts;
    texts.reserve(corpus.documents.size());
    for (const data::Document& d : corpus.documents) texts.push_back(d.text);
    data::BpeTrainerOptions bo;
    bo.vocab_size = preset.vocab_size;
    bo.special_tokens = {kEndOfText};
    fs::create_directories(tokenizer_path.parent_path());
    data::train_bpe(texts, bo).save(tokenizer_path);
  }
  const data::Tokenizer tokenizer = data::Tokenizer::load(tokenizer_path);

  // 2. Dataset.
  const data::TokenDataset dataset = data::cached_dataset({.corpus = o.corpus,
                                                           .tokenizer = tokenizer_path,
                                                           .out = o.out / "dataset",
                                                           .seed = o.seed,
                                                           .max_documents = o.max_documents},
                                                          "pretrain");
  const TokenStream stream = TokenStream::from_dataset(dataset, "train");
  if (builds && group) group->barrier();

  // 3. Training.
  const Json model_config_json = preset_model_config(preset, tokenizer.vocab_size(), mixers);
  const nn::ModelConfig model_config = nn::ModelConfig::from_json(model_config_json, "preset " + preset.name);
  nn::LoadOptions load;
  load.device = device;
  nn::Model model = nn::Model::random(model_config, o.seed, load);
  const auto t0 = std::chrono::steady_clock::now();
  const bool resume = resume_after_restart(group, o.out / "run", o.resume);
  const DataParallel parallel =
      group ? make_data_parallel(group, o.bucket_bytes, o.zero,
                                 {{"pretrain arguments", args.dump()},
                                  {"tokenizer", data::tasks::sha256_file(tokenizer_path)},
                                  {"model config", model_config_json.dump()}})
            : DataParallel{};
  const TrainResult r = train(model, stream, tc, o.out / "run", resume, group ? &parallel : nullptr);
  PretrainSummary s;
  s.model_dir = model_dir;
  s.steps = r.step;
  s.finished = r.finished;
  s.memory = r.memory;
  s.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.steps.empty()) {
    s.final_loss = r.steps.back().loss;
  } else {
    // Resumed from the final checkpoint (a run killed during export): its loss is in the log.
    s.final_loss = last_logged_loss(o.out / "run" / "metrics.jsonl");
  }
  if (!r.finished || !builds) return s;  // rank 0 alone exports and validates

  // 4. Export and validation perplexity. A parameterised model is exported dense (W =
  // dense_weight()): a plain HF model that eval and generate load unchanged. Maestro's discovered
  // ranks are read before that.
  const OrderedJson discovered_ranks = maestro_ranks(model);
  densify(model);
  model.save(model_dir, at::kFloat);
  tokenizer.save(model_dir / "tokenizer.json");
  write_json_file(model_dir / "tokenizer_config.json",
                  OrderedJson{{"tokenizer_class", "PreTrainedTokenizerFast"},
                              {"eos_token", kEndOfText},
                              {"model_max_length", tc.seq_len}});
  OrderedJson generation{{"_from_model_config", true}};
  if (auto eos = tokenizer.eos_id()) generation["eos_token_id"] = *eos;
  write_json_file(model_dir / "generation_config.json", generation);
  if (const auto validation = eval::split_perplexity(model, dataset, "validation", 1 << 16, tc.seq_len))
    s.validation = *validation;
  else
    log::warn("pretrain: the validation split is empty; no validation perplexity");
  OrderedJson summary = s.to_json();
  summary["args"] = args;
  summary["trainer"] = tc.to_json();
  summary["model"] = OrderedJson::parse(preset_model_config(preset, tokenizer.vocab_size(), mixers).dump());
  if (!discovered_ranks.empty())
    summary["parameterization"] = OrderedJson{{"method", tc.parameterization}, {"ranks", discovered_ranks}};
  write_json_file(summary_path, summary);
  return s;
}

}  // namespace lowrank::train
