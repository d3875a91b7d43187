// The classification loop, its evaluation and `lowrank task train`; see classify.h.
#include "lowrank/train/classify.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <set>
#include <tuple>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"
#include "lowrank/core/progress.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/token_mixer.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/pretrain.h"
#include "lowrank/train/schedule.h"

namespace lowrank::train {
namespace fs = std::filesystem;
using data::tasks::Split;
using data::tasks::TaskDataset;

namespace {

const TaskDataset& check_classification(const TaskDataset& task) {
  LR_CHECK(task.info().header.target == "class", InvalidArgument, "task ", task.dir().string(), " (",
           task.info().header.task, ") has target \"", task.info().header.target,
           "\", not \"class\": it is not a classification task");
  return task;
}

int64_t longest_row(const TaskDataset& task) {
  int64_t longest = 0;
  for (Split s : data::tasks::kSplits)
    longest = std::max(longest, task.info().splits[static_cast<int>(s)].max_length);
  return longest;
}

// The model must read every token id and predict every class of the task.
void check_fits(const nn::SequenceClassifier& model, const TaskDataset& task) {
  const auto& info = task.info();
  LR_CHECK(info.header.vocab_size <= model.config().vocab_size, InvalidArgument, "task ", task.dir().string(),
           " has a vocabulary of ", info.header.vocab_size, " tokens; the model reads ",
           model.config().vocab_size);
  LR_CHECK(info.num_classes == model.config().num_labels, InvalidArgument, "task ", task.dir().string(),
           " has ", info.num_classes, " classes; the model has num_labels ", model.config().num_labels);
}

// An image model reads the task's images: layout {"kind": "image", height, width, channels} of the
// model's image_size and num_channels, pixel tokens 0..255. `Config` is ImageClassifierConfig or
// ConvNetConfig (the same image keys); `architecture` names the model in the message.
template <class Config>
void check_image_fits(const Config& c, const char* architecture, const TaskDataset& task) {
  const auto& info = task.info();
  const OrderedJson& layout = info.header.layout;
  LR_CHECK(layout.value("kind", "") == "image", InvalidArgument, "task ", task.dir().string(), " (",
           info.header.task, ") is not an image task (layout ", layout.dump(), "); ", architecture,
           " reads images");
  const int64_t height = layout.value("height", int64_t{0}), width = layout.value("width", int64_t{0});
  const int64_t channels = layout.value("channels", int64_t{1});
  LR_CHECK(height == c.image_height && width == c.image_width && channels == c.num_channels, InvalidArgument,
           "task ", task.dir().string(), " has ", channels, "x", height, "x", width,
           " images; the model reads num_channels x image_size ", c.num_channels, "x", c.image_height, "x",
           c.image_width);
  LR_CHECK(info.num_classes == c.num_labels, InvalidArgument, "task ", task.dir().string(), " has ",
           info.num_classes, " classes; the model has num_labels ", c.num_labels);
}

void check_fits(const nn::ImageClassifier& model, const TaskDataset& task) {
  check_image_fits(model.config(), "LowrankMixerForImageClassification", task);
}

void check_fits(const nn::ConvNet& model, const TaskDataset& task) {
  check_image_fits(model.config(), "LowrankConvNetForImageClassification", task);
}

void check_fits(const nn::LieGroupClassifier& model, const TaskDataset& task) {
  check_image_fits(model.config(), "LieGroupClassifier", task);
}

// The logits of a batch: the sequence classifier reads the ids and the mask; the image models the
// pixels. `training`: a training step (the ConvNet's BatchNorm then uses batch statistics).
at::Tensor batch_logits(const nn::SequenceClassifier& model, const TaskBatch& batch, bool /*training*/) {
  return model.forward(batch.input_ids, batch.attention_mask);
}

at::Tensor batch_logits(const nn::ImageClassifier& model, const TaskBatch& batch, bool /*training*/) {
  const nn::ImageClassifierConfig& c = model.config();
  return model.forward(batch_pixels(batch, c.image_height, c.image_width, c.num_channels));
}

at::Tensor batch_logits(const nn::ConvNet& model, const TaskBatch& batch, bool training) {
  const nn::ConvNetConfig& c = model.config();
  return model.forward(batch_pixels(batch, c.image_height, c.image_width, c.num_channels), training);
}

at::Tensor batch_logits(const nn::LieGroupClassifier& model, const TaskBatch& batch, bool training) {
  const nn::LieGroupClassifierConfig& c = model.config();
  return model.forward(batch_pixels(batch, c.image_height, c.image_width, c.num_channels), training);
}

// The trained tensors, and the state that is saved and restored beside them but not trained.
nn::NamedTensors trained_tensors(const nn::SequenceClassifier& model) {
  return model.named_tensors();
}
nn::NamedTensors trained_tensors(const nn::ImageClassifier& model) {
  return model.named_tensors();
}
nn::NamedTensors trained_tensors(const nn::ConvNet& model) {
  return model.named_parameters();
}
nn::NamedTensors trained_tensors(const nn::LieGroupClassifier& model) {
  return model.named_parameters();
}
nn::NamedTensors untrained_state(const nn::SequenceClassifier&) {
  return {};
}
nn::NamedTensors untrained_state(const nn::ImageClassifier&) {
  return {};
}
nn::NamedTensors untrained_state(const nn::ConvNet& model) {
  return model.named_buffers();
}
nn::NamedTensors untrained_state(const nn::LieGroupClassifier& model) {
  return model.named_buffers();  // the element counter: a resumed run draws the same elements
}

}  // namespace

std::pair<double, double> wilson_interval(int64_t successes, int64_t n, double z) {
  LR_CHECK(n >= 1 && successes >= 0 && successes <= n, InvalidArgument, "Wilson interval of ", successes,
           " out of ", n);
  const double nn = static_cast<double>(n);
  const double p = static_cast<double>(successes) / nn;
  const double z2 = z * z;
  const double denom = 1.0 + z2 / nn;
  const double centre = (p + z2 / (2 * nn)) / denom;
  const double half = z / denom * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

TaskBatch task_batch(const TaskDataset& task, Split split, const std::vector<int64_t>& rows) {
  check_classification(task);
  LR_CHECK(!rows.empty(), InvalidArgument, "task batch: no rows");
  const data::tasks::SequenceFile& tokens = task.tokens(split);
  const data::tasks::SequenceFile& labels = task.labels(split);
  int64_t longest = 0;
  for (int64_t r : rows) {
    LR_CHECK(r >= 0 && r < tokens.rows(), InvalidArgument, "task batch: row ", r, " outside ",
             data::tasks::split_name(split), " (", tokens.rows(), " examples)");
    longest = std::max(longest, tokens.row_length(r));
  }
  const auto B = static_cast<int64_t>(rows.size());
  const int64_t pad = std::max<int64_t>(task.info().header.pad_id, 0);
  at::Tensor ids = at::full({B, longest}, pad, at::kLong);
  at::Tensor mask = at::zeros({B, longest}, at::kBool);
  at::Tensor y = at::empty({B}, at::kLong);
  auto* id = ids.data_ptr<int64_t>();
  auto* m = mask.data_ptr<bool>();
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int64_t> row = tokens.row(rows[b]);
    std::copy(row.begin(), row.end(), id + b * longest);
    std::fill(m + b * longest, m + b * longest + static_cast<int64_t>(row.size()), true);
    LR_CHECK(labels.row_length(rows[b]) == 1, Corruption, labels.path().string(), ": row ", rows[b],
             " holds ", labels.row_length(rows[b]), " labels, expected one class id");
    y.data_ptr<int64_t>()[b] = labels.at(rows[b], 0);
  }
  return {ids, mask, y};
}

at::Tensor batch_pixels(const TaskBatch& batch, int64_t height, int64_t width, int64_t channels) {
  const int64_t B = batch.input_ids.size(0);
  LR_CHECK(batch.input_ids.size(1) == height * width * channels, InvalidArgument, "image batch: rows of ",
           batch.input_ids.size(1), " pixels for ", channels, "x", height, "x", width, " images");
  return batch.input_ids.to(at::kFloat).div(255.0).view({B, height, width, channels}).permute({0, 3, 1, 2});
}

OrderedJson AccuracyResult::to_json() const {
  return OrderedJson{{"accuracy", accuracy},
                     {"correct", correct},
                     {"examples", examples},
                     {"ci95", {ci_low, ci_high}},
                     {"ci_method", "wilson"}};
}

namespace {

template <class Classifier>
AccuracyResult evaluate(const Classifier& model, const TaskDataset& task, Split split, int64_t batch_size,
                        int64_t max_examples) {
  check_classification(task);
  check_fits(model, task);
  LR_CHECK(batch_size >= 1, InvalidArgument, "evaluation batch size must be >= 1, got ", batch_size);
  LR_CHECK(max_examples >= 0, InvalidArgument, "evaluation examples must be >= 0, got ", max_examples);
  int64_t n = task.tokens(split).rows();
  if (max_examples > 0) n = std::min(n, max_examples);
  LR_CHECK(n >= 1, InvalidArgument, "task ", task.dir().string(), ": the ", data::tasks::split_name(split),
           " split is empty");
  at::NoGradGuard no_grad;
  AccuracyResult r;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(n, begin + batch_size); ++i) rows.push_back(i);
    const TaskBatch batch = task_batch(task, split, rows);
    const at::Tensor logits = batch_logits(model, batch, /*training=*/false);
    r.correct += logits.argmax(-1).to(at::kCPU).eq(batch.labels).sum().item<int64_t>();
  }
  r.examples = n;
  r.accuracy = static_cast<double>(r.correct) / static_cast<double>(n);
  std::tie(r.ci_low, r.ci_high) = wilson_interval(r.correct, n);
  return r;
}

template <class Classifier>
ClassifyResult train(Classifier& model, const TaskDataset& task, ClassifyConfig config,
                     const fs::path& run_dir, bool resume) {
  check_classification(task);
  check_fits(model, task);
  TrainerConfig& tc = config.trainer;
  LR_CHECK(tc.parameterization.empty() && !tc.per_layer_updates && tc.autocast.empty(), InvalidArgument,
           "classification training: parameterization, per-layer updates and autocast are not supported");
  LR_CHECK(config.eval_every >= 0 && config.eval_examples >= 0 && config.eval_batch_size >= 1,
           InvalidArgument, "classification training: eval_every (", config.eval_every,
           ") and eval_examples (", config.eval_examples, ") must be >= 0, eval_batch_size (",
           config.eval_batch_size, ") >= 1");
  tc.seq_len = longest_row(task);
  tc.validate();
  const int64_t train_rows = task.tokens(Split::kTrain).rows();
  LR_CHECK(train_rows >= 1, InvalidArgument, "task ", task.dir().string(), ": the train split is empty");
  fs::create_directories(run_dir);

  TrainTarget target;
  for (auto& [name, t] : trained_tensors(model)) {
    if (!t.requires_grad()) t.requires_grad_(true);
    target.params.emplace_back(name, t);
  }
  target.frozen = untrained_state(model);
  target.save = [&model](const fs::path& dir) { model.save(dir, at::kFloat); };
  target.param_groups = model.param_groups();
  std::vector<at::Tensor> param_tensors;
  for (auto& [n, p] : target.params) param_tensors.push_back(p);
  const std::unique_ptr<optim::Optimizer> optimizer = make_optimizer(target.params, tc);
  optimizer->set_overrides(param_overrides(target.param_groups, target.params, tc.lr));
  // Each "window" is one example: the sampler draws an example index uniformly, with replacement.
  WindowSampler sampler(tc.seed, train_rows, 1);
  const LrSchedule schedule = tc.schedule();
  const fs::path metrics_path = run_dir / "metrics.jsonl";

  const CheckpointPosition position = start_run(run_dir, resume, tc, target, *optimizer);
  int64_t step = position.step, tokens = position.tokens;
  sampler.set_counter(position.sampler_counter);
  std::ofstream metrics(metrics_path, std::ios::app);
  LR_CHECK(metrics.good(), IoError, "cannot open ", metrics_path.string(), " for appending");

  ClassifyResult result;
  result.step = step;
  auto validate = [&] {
    const AccuracyResult a = evaluate(model, task, Split::kVal, config.eval_batch_size, config.eval_examples);
    metrics << OrderedJson{{"step", step},
                           {"val_accuracy", a.accuracy},
                           {"val_ci95", {a.ci_low, a.ci_high}},
                           {"val_examples", a.examples}}
                   .dump()
            << "\n"
            << std::flush;
    result.validation = a;
  };
  ProgressBar bar(tc.steps - step, "train");
  while (step < tc.steps) {
    const double lr = schedule.at(step);
    const StepRecord record = supervised_step(step, lr, tc, *optimizer, param_tensors, [&](int64_t& units) {
      std::vector<int64_t> rows;
      for (int64_t b = 0; b < tc.batch_size; ++b) rows.push_back(sampler.next());
      const TaskBatch batch = task_batch(task, Split::kTrain, rows);
      const int64_t n = batch.attention_mask.sum().item<int64_t>();
      units += n;
      tokens += n;
      const at::Tensor logits = batch_logits(model, batch, /*training=*/true);
      return at::cross_entropy_loss(logits.to(at::kFloat), batch.labels.to(logits.device()));
    });
    ++step;
    result.step = step;
    if (finish_step(record, tc, metrics, result.steps, bar,
                    str("loss ", std::to_string(record.loss).substr(0, 6), " lr ", lr)))
      return result;  // as if killed: no checkpoint
    if (config.eval_every > 0 && step % config.eval_every == 0 && step < tc.steps) validate();
    if (step == tc.steps || (tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0))
      write_checkpoint(run_dir, target, *optimizer, tc, {step, tokens, sampler.counter()});
  }
  bar.finish();
  optimizer->zero_grad();
  validate();
  result.finished = true;
  return result;
}

}  // namespace

AccuracyResult evaluate_accuracy(const nn::SequenceClassifier& model, const TaskDataset& task, Split split,
                                 int64_t batch_size, int64_t max_examples) {
  return evaluate(model, task, split, batch_size, max_examples);
}

AccuracyResult evaluate_accuracy(const nn::ImageClassifier& model, const TaskDataset& task, Split split,
                                 int64_t batch_size, int64_t max_examples) {
  return evaluate(model, task, split, batch_size, max_examples);
}

void check_task_fits(const nn::ImageClassifier& model, const TaskDataset& task) {
  check_fits(model, task);
}

AccuracyResult evaluate_accuracy(const nn::ConvNet& model, const TaskDataset& task, Split split,
                                 int64_t batch_size, int64_t max_examples) {
  return evaluate(model, task, split, batch_size, max_examples);
}

ClassifyResult train_classifier(nn::SequenceClassifier& model, const TaskDataset& task, ClassifyConfig config,
                                const fs::path& run_dir, bool resume) {
  return train(model, task, std::move(config), run_dir, resume);
}

ClassifyResult train_classifier(nn::ImageClassifier& model, const TaskDataset& task, ClassifyConfig config,
                                const fs::path& run_dir, bool resume) {
  return train(model, task, std::move(config), run_dir, resume);
}

ClassifyResult train_classifier(nn::ConvNet& model, const TaskDataset& task, ClassifyConfig config,
                                const fs::path& run_dir, bool resume) {
  return train(model, task, std::move(config), run_dir, resume);
}

AccuracyResult evaluate_accuracy(const nn::LieGroupClassifier& model, const TaskDataset& task, Split split,
                                 int64_t batch_size, int64_t max_examples) {
  return evaluate(model, task, split, batch_size, max_examples);
}

ClassifyResult train_classifier(nn::LieGroupClassifier& model, const TaskDataset& task, ClassifyConfig config,
                                const fs::path& run_dir, bool resume) {
  return train(model, task, std::move(config), run_dir, resume);
}

namespace {

TrainerConfig classify_trainer(int64_t steps, int64_t batch, double lr, int64_t warmup,
                               int64_t checkpoint_every) {
  // seq_len is the task's, set by train_classifier.
  TrainerConfig c = trainer_preset(steps, batch, /*seq_len=*/1, lr, warmup, checkpoint_every);
  c.adam.weight_decay = 0.01;
  return c;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  for (char ch : text + ",") {
    if (ch != ',') {
      if (ch != ' ') item += ch;
      continue;
    }
    out.push_back(item);
    item.clear();
  }
  return out;
}

}  // namespace

std::vector<ClassifyPreset> classify_presets() {
  ClassifyPreset vit{"vit-tiny",
                     64,
                     256,
                     4,
                     2,
                     28 * 28,
                     classify_trainer(500, 32, 1e-3, 50, 100),
                     "28x28 images, patch 2, stages 2x32 and 2x64 (LowrankMixerForImageClassification); "
                     "500 steps of 32 images"};
  vit.image = Json{{"patch_size", 2},
                   {"stages", {{{"depth", 2}, {"hidden_size", 32}}, {{"depth", 2}, {"hidden_size", 64}}}}};
  // The ConvNets: vit-tiny's stages (28x28 -> 14x14 x 32 -> 7x7 x 64) and schedule.
  const Json conv_stages = {{{"depth", 2}, {"hidden_size", 32}}, {{"depth", 2}, {"hidden_size", 64}}};
  ClassifyPreset metanext{"metanext-tiny",
                          64,
                          256,
                          4,
                          1,
                          28 * 28,
                          classify_trainer(500, 32, 1e-3, 50, 100),
                          "28x28 images, patch 2, stages 2x32 and 2x64 of MetaNeXt blocks "
                          "(LowrankConvNetForImageClassification); --mixer inception_dw (default), dwconv "
                          "or dilated_reparam; 500 steps of 32 images"};
  metanext.convnet = Json{{"patch_size", 2}, {"stages", conv_stages}};
  for (Json& st : metanext.convnet["stages"]) st["block"] = "metanext";
  ClassifyPreset unirep = metanext;
  unirep.name = "unireplknet-tiny";
  unirep.help =
      "the same stages of UniRepLKNet blocks (DW, BN, SE, MLP with GRN); --mixer dilated_reparam "
      "(default, kernel 13), dwconv (--mixer-options {\"kernel_size\": 13 | 3}) or inception_dw";
  for (Json& st : unirep.convnet["stages"]) st["block"] = "unireplknet";
  // The equivariance study (nn/lie_group_classifier.h): lifting + one group convolution over
  // GL⁺(2) or SL(2), 8 channels, 5x5 windows, SIREN kernels of width 16, 15 fixed elements (one Haar
  // draw under the 15 rotations by 24°: the finest rotation grid for 15 elements, as the test maps
  // rotate by up to ±π); "lie-cnn" is the plain CNN of the same layout and size.
  ClassifyPreset lie_gl2{"lie-gl2",
                         8,
                         0,
                         2,
                         1,
                         64 * 64,
                         classify_trainer(600, 32, 3e-3, 30, 200),
                         "lifting + group convolution on GL+(2) (Mironenco & Forre), 8 channels, 15 fixed "
                         "elements; 600 steps of 32 images"};
  lie_gl2.lie_group =
      Json{{"group", "gl2"},      {"channels", 8},      {"kernel_size", 5}, {"kernel_hidden", 16},
           {"train_samples", 15}, {"eval_samples", 15}, {"t_max", 0.5},     {"log_scale_max", 0.25},
           {"resample", false},   {"rotations", 15}};
  ClassifyPreset lie_sl2 = lie_gl2;
  lie_sl2.name = "lie-sl2";
  lie_sl2.help = "the same on SL(2)";
  lie_sl2.lie_group["group"] = "sl2";
  ClassifyPreset lie_cnn = lie_gl2;
  lie_cnn.name = "lie-cnn";
  lie_cnn.help = "the plain CNN of lie-gl2's layout with as many parameters (the study's baseline)";
  lie_cnn.lie_group["group"] = "none";
  return {{"lra-tiny", 64, 128, 2, 2, 1024, classify_trainer(500, 16, 1e-3, 50, 100),
           "hidden 64, 2 layers, 2 heads, sequences up to 1024 tokens; 500 steps of 16 examples"},
          vit,
          metanext,
          unirep,
          lie_gl2,
          lie_sl2,
          lie_cnn};
}

ClassifyPreset classify_preset(const std::string& name) {
  std::string known;
  for (const ClassifyPreset& p : classify_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  throw InvalidArgument(str("--preset: unknown preset \"", name, "\" (known: ", known, ")"));
}

Json mixer_keys(const std::string& mixer, const std::string& layer_mixers, const Json& mixer_options,
                int64_t num_layers) {
  LR_CHECK(mixer.empty() != layer_mixers.empty(), InvalidArgument,
           mixer.empty() ? "give --mixer NAME or --layer-mixers a,b,..."
                         : "give --mixer or --layer-mixers, not both");
  LR_CHECK(mixer_options.is_object(), InvalidArgument, "--mixer-options: expected a JSON object, got ",
           mixer_options.dump());
  const nn::MixerRegistry& registry = nn::mixer_registry();
  auto check_known = [&](const std::string& name, const std::string& flag) {
    LR_CHECK(registry.contains(name), InvalidArgument, flag, ": unknown mixer \"", name,
             "\" (known: ", registry.known(), ")");
  };
  Json keys = Json::object();
  Json config = Json::object();
  if (!mixer.empty()) {
    check_known(mixer, "--mixer");
    keys["layer_mixers"] = mixer;
    if (!mixer_options.empty()) config[mixer] = mixer_options;
  } else {
    const std::vector<std::string> names = split_list(layer_mixers);
    LR_CHECK(names.size() == 1 || static_cast<int64_t>(names.size()) == num_layers, InvalidArgument,
             "--layer-mixers lists ", names.size(), " mixers for ", num_layers,
             " layers (give one name, or one per layer)");
    std::set<std::string> used;
    for (const std::string& n : names) {
      check_known(n, "--layer-mixers");
      used.insert(n);
    }
    keys["layer_mixers"] = names.size() == 1 ? Json(names.front()) : Json(names);
    for (const auto& [name, value] : mixer_options.items()) {
      LR_CHECK(used.contains(name), InvalidArgument,
               "--mixer-options: with --layer-mixers the options are keyed by mixer "
               "name ({\"<mixer>\": {...}}); \"",
               name, "\" is not one of the listed mixers");
      LR_CHECK(value.is_object(), InvalidArgument, "--mixer-options: the options of \"", name,
               "\" must be an object, got ", value.dump());
      config[name] = value;
    }
  }
  keys["mixer_config"] = config;
  return keys;
}

void check_mixers(const nn::ModelConfig& config, bool need_causal) {
  std::set<std::string> seen;
  for (size_t i = 0; i < config.layer_mixers.size(); ++i) {
    const std::string& name = config.layer_mixers[i];
    if (!seen.insert(name).second) continue;
    const auto layer = static_cast<int64_t>(i);
    nn::MixerSpec spec{config,  layer,  nn::mixer_prefix(name, layer), config.mixer_options(name),
                       nullptr, nullptr};
    // Zero weights: only the mixer's construction (its options) and its causal() are of interest.
    spec.projection = [](const std::string&, int64_t out, int64_t in, bool bias) {
      return std::shared_ptr<const nn::BaseOperator>(
          std::make_shared<nn::DenseOperator>(at::zeros({out, in}), bias ? at::zeros({out}) : at::Tensor()));
    };
    spec.tensor = [](const std::string&, std::vector<int64_t> shape, nn::ParamInit init,
                     const at::Tensor& value) {
      return init == nn::ParamInit::kValue ? value.to(at::kFloat).clone() : at::zeros(shape);
    };
    const std::unique_ptr<nn::TokenMixer> built = nn::mixer_registry().factory(name)(spec);
    LR_CHECK(!need_causal || built->causal(), InvalidArgument, name,
             " is bidirectional; use it in a classification model");
  }
}

OrderedJson TaskTrainSummary::to_json() const {
  return OrderedJson{{"model_dir", model_dir.string()},
                     {"finished", finished},
                     {"steps", steps},
                     {"final_loss", final_loss},
                     {"validation", validation.to_json()}};
}

namespace {

// Saves a finished run's model and writes OUT/train.json.
template <class Classifier>
TaskTrainSummary finish_task_train(const TaskTrainOptions& o, const ClassifyPreset& preset,
                                   const ClassifyConfig& cc, const Classifier& model,
                                   const ClassifyResult& r) {
  TaskTrainSummary s;
  s.model_dir = o.out / "model";
  s.finished = r.finished;
  s.steps = r.step;
  if (!r.steps.empty()) s.final_loss = r.steps.back().loss;
  if (!r.finished) return s;
  model.save(s.model_dir, at::kFloat);
  s.validation = *r.validation;
  OrderedJson summary = s.to_json();
  summary["preset"] = preset.name;
  summary["task"] = o.task.string();
  summary["trainer"] = cc.trainer.to_json();
  write_json_file(o.out / "train.json", summary);
  return s;
}

// The keys an image model's config takes from its task: image_size, num_channels, num_labels,
// id2label, task, and torch_dtype float32.
void set_image_task_keys(Json& config_json, const TaskDataset& task) {
  const auto& info = task.info();
  const OrderedJson& layout = info.header.layout;
  Json id2label = Json::object();
  for (size_t i = 0; i < info.header.classes.size(); ++i)
    id2label[std::to_string(i)] = info.header.classes[i];
  config_json["image_size"] = {layout.value("height", int64_t{0}), layout.value("width", int64_t{0})};
  config_json["num_channels"] = layout.value("channels", int64_t{1});
  config_json["num_labels"] = info.num_classes;
  config_json["id2label"] = id2label;
  config_json["task"] = info.header.task;
  config_json["torch_dtype"] = "float32";
}

// An image preset: the task's image size and channels, the preset's stages with the chosen mixers
// (--mixer: every stage; --layer-mixers: one per stage).
TaskTrainSummary task_train_image(const TaskTrainOptions& o, const ClassifyPreset& preset,
                                  const ClassifyConfig& cc, const TaskDataset& task) {
  const auto& info = task.info();
  const OrderedJson& layout = info.header.layout;
  LR_CHECK(layout.value("kind", "") == "image", InvalidArgument, "--preset ", preset.name,
           " trains on images; task ", o.task.string(), " (", info.header.task, ") has layout ",
           layout.dump());
  Json config_json = preset.image;
  const Json keys = nn::with_bidirectional_attention(mixer_keys(
      o.mixer, o.layer_mixers, o.mixer_options, static_cast<int64_t>(config_json.at("stages").size())));
  const Json& mixers = keys.at("layer_mixers");
  Json& stages = config_json["stages"];
  const Json& per_stage = o.stage_mixer_options;
  LR_CHECK(per_stage.is_array() && (per_stage.empty() || per_stage.size() == stages.size()), InvalidArgument,
           "--stage-mixer-options: expected a JSON array of ", stages.size(), " objects (one per stage of ",
           preset.name, "), got ", per_stage.dump());
  for (size_t i = 0; i < stages.size(); ++i) {
    stages[i]["mixer"] = mixers.is_string() ? mixers : mixers[i];
    if (per_stage.empty()) continue;
    LR_CHECK(per_stage[i].is_object(), InvalidArgument, "--stage-mixer-options: stage ", i,
             "'s options must be an object, got ", per_stage[i].dump());
    if (!per_stage[i].empty()) stages[i]["mixer_options"] = per_stage[i];
  }
  set_image_task_keys(config_json, task);
  config_json["architectures"] = Json::array({"LowrankMixerForImageClassification"});
  config_json["model_type"] = "lowrank_mixer";
  config_json["mixer_config"] = keys.at("mixer_config");
  config_json["rms_norm_eps"] = 1e-5;
  config_json["rope_theta"] = 10000.0;
  config_json["hidden_act"] = "silu";
  config_json["initializer_range"] = 0.02;
  const nn::ImageClassifierConfig config =
      nn::ImageClassifierConfig::from_json(config_json, "preset " + preset.name);
  nn::ImageClassifier model = nn::ImageClassifier::random(config, o.seed);
  const ClassifyResult r = train_classifier(model, task, cc, o.out / "run", o.resume);
  return finish_task_train(o, preset, cc, model, r);
}

// A ConvNet preset: the task's image size and channels, the preset's stages with the chosen
// depthwise mixer (--mixer: every stage; --layer-mixers: one per stage; default inception_dw for
// MetaNeXt blocks and dilated_reparam for UniRepLKNet blocks) and --mixer-options merged into
// every stage (kernel_size, square_kernel_size, band_kernel_size, branch_ratio).
TaskTrainSummary task_train_convnet(const TaskTrainOptions& o, const ClassifyPreset& preset,
                                    const ClassifyConfig& cc, const TaskDataset& task) {
  const auto& info = task.info();
  const OrderedJson& layout = info.header.layout;
  LR_CHECK(layout.value("kind", "") == "image", InvalidArgument, "--preset ", preset.name,
           " trains on images; task ", o.task.string(), " (", info.header.task, ") has layout ",
           layout.dump());
  LR_CHECK(o.mixer.empty() || o.layer_mixers.empty(), InvalidArgument,
           "give --mixer or --layer-mixers, not both");
  LR_CHECK(o.mixer_options.is_object(), InvalidArgument, "--mixer-options: expected a JSON object, got ",
           o.mixer_options.dump());
  Json config_json = preset.convnet;
  Json& stages = config_json["stages"];
  std::vector<std::string> mixers = split_list(o.layer_mixers.empty() ? o.mixer : o.layer_mixers);
  if (mixers.size() == 1 && mixers.front().empty()) mixers.clear();
  LR_CHECK(mixers.size() <= 1 || mixers.size() == stages.size(), InvalidArgument, "--layer-mixers lists ",
           mixers.size(), " mixers for ", stages.size(), " stages (give one name, or one per stage)");
  std::string known;
  for (const std::string& m : nn::convnet_mixers()) known += str(known.empty() ? "" : ", ", m);
  for (size_t i = 0; i < stages.size(); ++i) {
    std::string mixer = stages[i].value("block", "") == "unireplknet" ? "dilated_reparam" : "inception_dw";
    if (!mixers.empty()) mixer = mixers.size() == 1 ? mixers.front() : mixers[i];
    const auto& names = nn::convnet_mixers();
    LR_CHECK(std::find(names.begin(), names.end(), mixer) != names.end(), InvalidArgument,
             o.layer_mixers.empty() ? "--mixer" : "--layer-mixers", ": \"", mixer,
             "\" is not a ConvNet mixer of --preset ", preset.name, " (known: ", known, ")");
    stages[i]["mixer"] = mixer;
    for (const auto& [key, value] : o.mixer_options.items()) stages[i][key] = value;
  }
  set_image_task_keys(config_json, task);
  config_json["architectures"] = Json::array({"LowrankConvNetForImageClassification"});
  config_json["model_type"] = "lowrank_convnet";
  config_json["initializer_range"] = 0.02;
  const nn::ConvNetConfig config = nn::ConvNetConfig::from_json(config_json, "preset " + preset.name);
  nn::ConvNet model = nn::ConvNet::random(config, o.seed);
  const ClassifyResult r = train_classifier(model, task, cc, o.out / "run", o.resume);
  return finish_task_train(o, preset, cc, model, r);
}

// A Lie-group preset: the task's image size, channels and classes; for "lie-cnn" the channels of
// the plain CNN as large as the GL⁺(2) model of the same keys. --mixer is not used.
TaskTrainSummary task_train_lie_group(const TaskTrainOptions& o, const ClassifyPreset& preset,
                                      const ClassifyConfig& cc, const TaskDataset& task) {
  const auto& info = task.info();
  LR_CHECK(info.header.layout.value("kind", "") == "image", InvalidArgument, "--preset ", preset.name,
           " trains on images; task ", o.task.string(), " (", info.header.task, ") has layout ",
           info.header.layout.dump());
  LR_CHECK(o.mixer.empty() && o.layer_mixers.empty(), InvalidArgument, "--preset ", preset.name,
           " has no token mixers (--mixer / --layer-mixers)");
  Json config_json = preset.lie_group;
  config_json["model_type"] = "lie_group_classifier";
  config_json["sample_seed"] = o.seed;
  set_image_task_keys(config_json, task);
  nn::LieGroupClassifierConfig config =
      nn::LieGroupClassifierConfig::from_json(config_json, "preset " + preset.name);
  if (config.group == "none") config.channels = nn::matched_cnn_channels(config);
  nn::LieGroupClassifier model = nn::LieGroupClassifier::random(config, o.seed);
  const ClassifyResult r = train_classifier(model, task, cc, o.out / "run", o.resume);
  return finish_task_train(o, preset, cc, model, r);
}

}  // namespace

TaskTrainSummary task_train(const TaskTrainOptions& o) {
  LR_CHECK(!o.out.empty(), InvalidArgument, "--out: an output directory is required");
  const ClassifyPreset preset = classify_preset(o.preset);
  ClassifyConfig cc;
  cc.trainer = preset.trainer;
  LR_CHECK(o.steps >= 0 && o.batch_size >= 0 && o.lr >= 0 && std::isfinite(o.lr), InvalidArgument,
           "--steps, --batch-size and --lr must be positive, got ", o.steps, ", ", o.batch_size, ", ", o.lr);
  if (o.steps > 0) cc.trainer.steps = o.steps;
  if (o.batch_size > 0) cc.trainer.batch_size = o.batch_size;
  if (o.lr > 0) {
    cc.trainer.lr = o.lr;
    cc.trainer.min_lr = o.lr / 10;
  }
  if (o.checkpoint_every > 0) cc.trainer.checkpoint_every = o.checkpoint_every;
  cc.trainer.warmup_steps = std::min(cc.trainer.warmup_steps, std::max<int64_t>(1, cc.trainer.steps / 10));
  cc.trainer.seed = o.seed;
  cc.trainer.stop_after = o.stop_after;
  cc.eval_every = o.eval_every;
  cc.eval_examples = o.eval_examples;

  const TaskDataset task = TaskDataset::open(o.task);
  check_classification(task);
  const auto& info = task.info();
  LR_CHECK(o.stage_mixer_options.empty() || !preset.image.empty(), InvalidArgument,
           "--stage-mixer-options applies to an image preset of token stages (vit-tiny), not ", preset.name,
           "; use --mixer-options");
  if (!preset.image.empty()) return task_train_image(o, preset, cc, task);
  if (!preset.convnet.empty()) return task_train_convnet(o, preset, cc, task);
  if (!preset.lie_group.empty()) return task_train_lie_group(o, preset, cc, task);
  const Json keys = nn::with_bidirectional_attention(
      mixer_keys(o.mixer, o.layer_mixers, o.mixer_options, preset.num_layers));
  const int64_t longest = longest_row(task);
  LR_CHECK(longest <= preset.max_seq_len, InvalidArgument, "task ", o.task.string(), " has rows of up to ",
           longest, " tokens; preset ", preset.name, " takes at most ", preset.max_seq_len);
  Json id2label = Json::object();
  for (size_t i = 0; i < info.header.classes.size(); ++i)
    id2label[std::to_string(i)] = info.header.classes[i];
  Json config_json = nn::sequence_classifier_config(
      info.header.vocab_size, preset.hidden_size, preset.intermediate_size, preset.num_layers,
      preset.num_heads, longest, keys, info.num_classes, o.pooling);
  config_json["id2label"] = id2label;
  config_json["task"] = info.header.task;
  const nn::ModelConfig config = nn::ModelConfig::from_json(config_json, "preset " + preset.name);
  // Builds the mixers: bad options fail here, before any training.
  nn::SequenceClassifier model = nn::SequenceClassifier::random(config, o.seed);
  const ClassifyResult r = train_classifier(model, task, cc, o.out / "run", o.resume);
  return finish_task_train(o, preset, cc, model, r);
}

}  // namespace lowrank::train
