// Training and evaluating sequence classifiers (nn/classifier.h) on the generated tasks of
// data/tasks/ (`lowrank task generate`, task_format.h): the trainer's loop (trainer.h) with the
// language-model loss replaced by cross entropy on class labels,
//   L = −(1/B) Σ_b log softmax(logits_b)[y_b],
// the same AdamW / low-rank optimizers (the mixers' param_groups honoured), warmup + cosine
// schedule, global-norm clipping, gradient accumulation, atomic checkpoints and exact resume
// (checkpoint.h; the sampler counter is the example sampler's), and metrics.jsonl.
// Training examples are drawn with replacement, example_i = splitmix64(seed, i) mod N (trainer.h's
// WindowSampler over N one-example "windows"); a batch is right-padded with the task's padding id
// (or 0 for a task of equal-length rows) and masked.
// Validation accuracy comes with a 95% Wilson score interval (Wilson, 1927, JASA 22(158)):
//   p̂ = k/n,  centre = (p̂ + z²/2n) / (1 + z²/n),
//   half-width = z/(1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/4n²),  z = 1.959964
// (chosen over the normal interval because it stays inside [0, 1] and is not degenerate at p̂ = 0
// or 1, which tiny validation sets reach).
// metrics.jsonl: the trainer's step lines (tokens_per_s counts real tokens), plus after each
// validation {"step", "val_accuracy", "val_ci95": [low, high], "val_examples"}.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/data/tasks/task_format.h"
#include "lowrank/nn/classifier.h"
#include "lowrank/nn/convnet.h"
#include "lowrank/nn/image_classifier.h"
#include "lowrank/nn/lie_group_classifier.h"
#include "lowrank/train/trainer.h"

namespace lowrank::train {

// The 95% (z = 1.959964 by default) Wilson score interval of `successes` out of `n` (n >= 1).
std::pair<double, double> wilson_interval(int64_t successes, int64_t n, double z = 1.959963984540054);

// Examples `rows` of `split`: input_ids [B, T] int64 right-padded to the longest row with the
// task's pad id (0 when it has none), attention_mask [B, T] bool, labels [B] int64. Throws
// InvalidArgument for a task whose target is not "class".
struct TaskBatch {
  at::Tensor input_ids, attention_mask, labels;
};
TaskBatch task_batch(const data::tasks::TaskDataset& task, data::tasks::Split split,
                     const std::vector<int64_t>& rows);
// The pixels of an image batch, tokens / 255 in [0, 1], as [B, channels, height, width] (the task
// stores each image row-major, channel-last pixels interleaved: (y, x, c)). InvalidArgument when a
// row does not hold height·width·channels pixels.
at::Tensor batch_pixels(const TaskBatch& batch, int64_t height, int64_t width, int64_t channels);

struct AccuracyResult {
  int64_t correct = 0;
  int64_t examples = 0;
  double accuracy = 0;
  double ci_low = 0, ci_high = 0;  // 95% Wilson interval
  OrderedJson to_json() const;
};

// Accuracy (argmax of the logits) over the first `max_examples` examples of `split` (0: all), in
// batches of `batch_size`, without gradients.
AccuracyResult evaluate_accuracy(const nn::SequenceClassifier& model, const data::tasks::TaskDataset& task,
                                 data::tasks::Split split, int64_t batch_size = 32, int64_t max_examples = 0);
// The same for an image classifier on an image task (layout "image" of the model's image_size and
// num_channels; pixels / 255).
AccuracyResult evaluate_accuracy(const nn::ImageClassifier& model, const data::tasks::TaskDataset& task,
                                 data::tasks::Split split, int64_t batch_size = 32, int64_t max_examples = 0);
// Throws InvalidArgument (naming the task and the values) unless `task` is an image task whose
// images and classes the model reads.
void check_task_fits(const nn::ImageClassifier& model, const data::tasks::TaskDataset& task);
// The same for a ConvNet (BatchNorm in eval mode: its running statistics).
AccuracyResult evaluate_accuracy(const nn::ConvNet& model, const data::tasks::TaskDataset& task,
                                 data::tasks::Split split, int64_t batch_size = 32, int64_t max_examples = 0);
// The same for the equivariance study's classifier (its fixed evaluation elements).
AccuracyResult evaluate_accuracy(const nn::LieGroupClassifier& model, const data::tasks::TaskDataset& task,
                                 data::tasks::Split split, int64_t batch_size = 32, int64_t max_examples = 0);

struct ClassifyConfig {
  // steps, batch_size, grad_accum, lr schedule, clipping, optimizer, seed, checkpoint_every,
  // stop_after as for language models; seq_len is the task's longest row (set by
  // train_classifier; it guards resume against another task). Parameterisation, per-layer
  // updates and autocast are not supported here.
  TrainerConfig trainer;
  int64_t eval_every = 0;     // validate every N steps (0: only at the end)
  int64_t eval_examples = 0;  // validation examples per evaluation (0: the whole split)
  int64_t eval_batch_size = 32;
};

struct ClassifyResult {
  int64_t step = 0;
  bool finished = false;
  std::vector<StepRecord> steps;             // the steps this call ran
  std::optional<AccuracyResult> validation;  // the last validation of this call
};

// Trains `model` (every tensor) on the train split of `task`, validating on its val split. With
// `resume` and a checkpoint in `run_dir`, continues from it bitwise. Throws InvalidArgument for a
// bad config, a task that is not a classification task or whose vocabulary / classes / lengths do
// not fit the model (naming both), Corruption for a damaged checkpoint, IoError.
ClassifyResult train_classifier(nn::SequenceClassifier& model, const data::tasks::TaskDataset& task,
                                ClassifyConfig config, const std::filesystem::path& run_dir, bool resume);
ClassifyResult train_classifier(nn::ImageClassifier& model, const data::tasks::TaskDataset& task,
                                ClassifyConfig config, const std::filesystem::path& run_dir, bool resume);
// A ConvNet trains its parameters with BatchNorm in training mode; the running statistics are
// checkpointed beside them (TrainTarget::frozen) and restored on resume.
ClassifyResult train_classifier(nn::ConvNet& model, const data::tasks::TaskDataset& task,
                                ClassifyConfig config, const std::filesystem::path& run_dir, bool resume);
// The equivariance study's classifier draws fresh group elements per training batch; their counter
// is checkpointed beside the parameters (TrainTarget::frozen).
ClassifyResult train_classifier(nn::LieGroupClassifier& model, const data::tasks::TaskDataset& task,
                                ClassifyConfig config, const std::filesystem::path& run_dir, bool resume);

// A classifier shape and schedule for `lowrank task train --preset`.
struct ClassifyPreset {
  std::string name;
  int64_t hidden_size, intermediate_size, num_layers, num_heads;
  int64_t max_seq_len;  // the longest row the preset accepts
  TrainerConfig trainer;
  std::string help;
  // An image preset's LowrankMixerForImageClassification keys (patch_size, stages without their
  // mixers; nn/image_classifier.h); empty for a sequence preset, whose sizes are the fields above.
  Json image = Json::object();
  // A ConvNet preset's LowrankConvNetForImageClassification keys (nn/convnet.h: patch_size, stages
  // with their block, without their mixers); empty otherwise.
  Json convnet = Json::object();
  // A LieGroupClassifier preset's keys (nn/lie_group_classifier.h: group, channels, kernel sizes,
  // element counts); empty otherwise. Group "none" with no channels: the plain CNN whose size
  // matches the GL⁺(2) model of the same keys.
  Json lie_group = Json::object();
};
// "lra-tiny" (d 64, 2 layers, sequences up to 1K tokens); "vit-tiny" (28x28 images, patch 2,
// stages 2x32 and 2x64; with --layer-mixers, one mixer per stage); "metanext-tiny" and
// "unireplknet-tiny" (ConvNets of the same stages, MetaNeXt and UniRepLKNet blocks; --mixer
// inception_dw | dwconv | dilated_reparam, --mixer-options {"kernel_size": K, ...} for every stage).
std::vector<ClassifyPreset> classify_presets();
// Throws InvalidArgument listing the known names.
ClassifyPreset classify_preset(const std::string& name);

// The per-layer mixer keys of a LowrankMixer config from the command line's --mixer NAME or
// --layer-mixers a,b,... (one name, or one per layer) and --mixer-options JSON (with --mixer: NAME's
// options; with --layer-mixers: {"<name>": {...}, ...}). Returns {"layer_mixers": ...,
// "mixer_config": ...}. Throws InvalidArgument for both or neither flag, a list of the wrong
// length, options that are not an object, and an unknown mixer (listing the known ones,
// nn::mixer_registry().known()).
Json mixer_keys(const std::string& mixer, const std::string& layer_mixers, const Json& mixer_options,
                int64_t num_layers);
// Builds each distinct mixer of `config` once (zero weights) and throws InvalidArgument
// "<name> is bidirectional; use it in a classification model" for a non-causal one when
// `need_causal`; bad mixer options fail here too, before any work.
void check_mixers(const nn::ModelConfig& config, bool need_causal);

// `lowrank task train`: a classifier of the preset's shape with the chosen mixers, trained on a
// task directory. Output: OUT/run (metrics.jsonl, checkpoints/), OUT/model (the HF directory),
// OUT/train.json (the summary).
struct TaskTrainOptions {
  std::filesystem::path task;
  std::filesystem::path out;
  std::string preset = "lra-tiny";
  std::string mixer;         // --mixer
  std::string layer_mixers;  // --layer-mixers a,b,...
  Json mixer_options = Json::object();
  // --stage-mixer-options (image presets with stages of tokens): one object per stage, over
  // mixer_options for that stage; empty: none.
  Json stage_mixer_options = Json::array();
  std::string pooling = "mean";
  int64_t steps = 0;       // 0: the preset's
  int64_t batch_size = 0;  // 0: the preset's
  double lr = 0;           // 0: the preset's
  uint64_t seed = 0;
  bool resume = false;
  int64_t stop_after = 0;
  int64_t checkpoint_every = 0;  // 0: the preset's
  int64_t eval_every = 0;
  int64_t eval_examples = 0;
};

struct TaskTrainSummary {
  std::filesystem::path model_dir;
  bool finished = false;
  int64_t steps = 0;
  double final_loss = 0;
  AccuracyResult validation;
  OrderedJson to_json() const;
};

// Checks every option (preset, mixers and their options, the task's kind and lengths) before
// training. Throws as train_classifier, and NotFound for a missing task directory.
TaskTrainSummary task_train(const TaskTrainOptions& options);

}  // namespace lowrank::train
