// `lowrank pretrain`: a Llama-style model trained from scratch on a text corpus, end to end:
//   1. a byte-level BPE tokenizer trained on the corpus (data/bpe_trainer.h), special token
//      <|endoftext|> (the document separator and eos);
//   2. the corpus tokenized into a token dataset with a validation split (data/prepare.h);
//   3. the model (nn::Model::random with the preset's shape) trained by train() (trainer.h) on
//      random windows of the train split;
//      (with --parameterization, through factored attention/MLP weights, densified at the end);
//   4. a Hugging Face directory written (config.json, model.safetensors, tokenizer.json,
//      tokenizer_config.json, generation_config.json) and its validation perplexity measured
//      (eval/perplexity.h, non-overlapping windows of seq_len).
// Output directory: tokenizer/ (tokenizer.json), dataset/, run/ (metrics.jsonl, checkpoints/),
// model/ (the HF directory) and pretrain.json (the summary). Each stage is skipped when its
// output already exists; a complete run with the same arguments is returned from the cache.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/train/optimizer_request.h"
#include "lowrank/train/trainer.h"

namespace lowrank::dist {
class Group;
}  // namespace lowrank::dist

namespace lowrank::train {

struct PretrainPreset {
  std::string name;
  int64_t vocab_size, hidden_size, intermediate_size, num_layers, num_heads;
  TrainerConfig trainer;  // steps, batch, seq_len, lr, ...
  std::string help;       // one line for --help and docs
  // "llama" (LlamaForCausalLM, or LowrankMixerForCausalLM with mixer keys) or "mamba"
  // (MambaForCausalLM: num_heads and intermediate_size unused, state_size 16, expand 2).
  std::string architecture = "llama";
};

// A preset's trainer settings: `steps` of `batch` windows of `seq_len` tokens, peak lr with a cosine
// to lr / 10 after `warmup` steps, clipping at 1.0, a checkpoint every `checkpoint_every` steps.
TrainerConfig trainer_preset(int64_t steps, int64_t batch, int64_t seq_len, double lr, int64_t warmup,
                             int64_t checkpoint_every);

// The presets: "tiny", "small", "galore-60m" and "mamba-tiny".
std::vector<PretrainPreset> pretrain_presets();
// Throws InvalidArgument listing the known names.
PretrainPreset pretrain_preset(const std::string& name);
// The HF config.json of a preset's model (LlamaForCausalLM, tied embeddings); with `mixer_keys`
// ({"layer_mixers", "mixer_config"}, classify.h's mixer_keys) a LowrankMixerForCausalLM instead.
Json preset_model_config(const PretrainPreset& preset, int64_t vocab_size, const Json& mixer_keys = Json());

struct PretrainOptions {
  std::string preset = "tiny";
  std::string corpus = "bible";  // a named corpus (data/corpus.h) or a path
  std::filesystem::path out;
  int64_t steps = 0;       // 0: the preset's
  int64_t batch_size = 0;  // windows per step; 0: the preset's
  int64_t seq_len = 0;     // tokens per window and the model's max_position_embeddings; 0: the preset's
  double lr = 0;           // peak learning rate; 0: the preset's (the cosine ends at lr / 10 either way)
  bool resume = false;
  uint64_t seed = 0;
  int64_t stop_after = 0;        // stop after this step without a checkpoint (testing)
  int64_t checkpoint_every = 0;  // 0: the preset's
  int64_t max_documents = -1;    // < 0: the whole corpus
  // The trainer's optimizer ("adamw" or a method of optim/), its options and flags. With a
  // parameterisation and adamw, --rank (optimizer.rank) is the parameterisation's rank instead.
  OptimizerRequest optimizer;
  // A low-rank weight parameterisation (parameterization.h: lowrank, sltrain, relora, sst, trp, maestro) and
  // its options (a JSON object); empty: dense. The exported model is dense either way (densify()).
  std::string parameterization;
  Json parameterization_options = Json::object();
  // Where the model trains ("cpu", "cuda", "cuda:N"; nn::parse_device) and TrainerConfig::autocast
  // ("", "bf16" or "fp16"; nn/autocast.h).
  std::string device = "cpu";
  std::string autocast;
  // The token mixers (token_mixer.h): --mixer NAME for every layer or --layer-mixers a,b,... (one
  // per layer), and --mixer-options (classify.h's mixer_keys); both empty: Llama attention
  // (a LlamaForCausalLM, as before). A bidirectional mixer is refused before any work.
  std::string mixer;
  std::string layer_mixers;
  Json mixer_options = Json::object();
  // Data-parallel runs (pretrain()'s `group`): DDP's gradient bucket size.
  int64_t bucket_bytes = 25 << 20;
  int zero = 0;  // 1: ZeRO-1 (zero.h)
};

struct PretrainSummary {
  std::filesystem::path model_dir;
  bool cached = false;    // a complete earlier run was reused
  bool finished = false;  // training reached its last step (false after stop_after)
  int64_t steps = 0;
  double final_loss = 0;
  double train_seconds = 0;
  eval::PerplexityResult validation;
  OrderedJson memory;  // training-state bytes by kind (TrainResult::memory)
  OrderedJson to_json() const;
};

// Runs the pipeline above. Every option is checked before the first stage (InvalidArgument for a
// bad preset, option or optimizer flag, NotFound for an unknown optimizer or parameterisation);
// then throws the errors of its stages (InvalidArgument for a bad corpus, NotFound for a missing
// corpus package, IoError when `out` cannot be written).
// With `group` (dist/group.h), this process is one rank of a data-parallel run (data_parallel.h):
// --batch-size is the global batch; rank 0 builds the tokenizer and dataset while the others wait,
// and rank 0 alone exports and validates. A torchrun restart (World::restart_count > 0) resumes
// from the newest checkpoint when there is one.
PretrainSummary pretrain(const PretrainOptions& options, dist::Group* group = nullptr);

}  // namespace lowrank::train
