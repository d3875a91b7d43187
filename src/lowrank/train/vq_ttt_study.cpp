// The visual-quality study and VQ-TTT on an image task; see vq_ttt_study.h.
#include "lowrank/train/vq_ttt_study.h"

#include <numeric>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"
#include "lowrank/data/image_degrade.h"
#include "lowrank/nn/image_classifier.h"

namespace lowrank::train {

namespace fs = std::filesystem;
using data::tasks::Split;
using data::tasks::TaskDataset;

namespace {

constexpr int64_t kBatch = 256;

AccuracyResult accuracy(const at::Tensor& predictions, const at::Tensor& labels) {
  AccuracyResult r;
  r.examples = labels.size(0);
  r.correct = predictions.eq(labels).sum().item<int64_t>();
  r.accuracy = static_cast<double>(r.correct) / static_cast<double>(r.examples);
  std::tie(r.ci_low, r.ci_high) = wilson_interval(r.correct, r.examples);
  return r;
}

// argmax of logits_fn over batches of `images` (no autograd).
template <class Fn>
at::Tensor predict(const at::Tensor& images, const Fn& logits_fn) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (int64_t start = 0; start < images.size(0); start += kBatch)
    out.push_back(logits_fn(images.narrow(0, start, std::min(kBatch, images.size(0) - start))).argmax(-1));
  return at::cat(out);
}

std::vector<int64_t> rows_where(const at::Tensor& mask) {
  const at::Tensor idx = mask.nonzero().flatten().to(at::kLong).contiguous();
  return {idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel()};
}

}  // namespace

std::string restoration_for(const std::string& degradation) {
  const data::DegradationSpec spec = data::parse_degradation(degradation);
  switch (spec.kind) {
    case data::Degradation::kClean:
      return "none";
    case data::Degradation::kNoise:
    case data::Degradation::kJpeg:
    case data::Degradation::kSharpen:
      return "denoise";
    case data::Degradation::kBlur:
    case data::Degradation::kDownsample:
      return "deblur";
    case data::Degradation::kContrast:
    case data::Degradation::kGamma:
      return "autocontrast";
  }
  return "none";
}

at::Tensor restore(const at::Tensor& images, const std::string& restoration) {
  if (restoration == "none") return images;
  if (restoration == "denoise") return data::gaussian_blur(images, 0.8).clamp(0, 1);
  if (restoration == "deblur") return (images + (images - data::gaussian_blur(images, 1.0))).clamp(0, 1);
  if (restoration == "autocontrast") {
    const at::Tensor low = images.amin({2, 3}, true), high = images.amax({2, 3}, true);
    return ((images - low) / (high - low).clamp_min(1e-6)).clamp(0, 1);
  }
  throw InvalidArgument(
      str("restore: unknown restoration \"", restoration, "\" (known: none, denoise, deblur, autocontrast)"));
}

OrderedJson VqTttSetResult::to_json() const {
  return OrderedJson{
      {"degradation", degradation},       {"restoration", restoration}, {"frozen", frozen.to_json()},
      {"restored", restored.to_json()},   {"vq_ttt", vq_ttt.to_json()}, {"improved", improved.size()},
      {"worsened", worsened.size()},      {"improved_rows", improved},  {"worsened_rows", worsened},
      {"class_accuracy", class_accuracy}, {"ttt_losses", ttt_losses}};
}

OrderedJson VqTttStudy::to_json() const {
  OrderedJson sets_json = OrderedJson::array();
  for (const VqTttSetResult& s : sets) sets_json.push_back(s.to_json());
  return OrderedJson{{"model", model},
                     {"task", task},
                     {"split", split},
                     {"examples", examples},
                     {"vq_ttt",
                      {{"filter_rank", ttt.filter_rank},
                       {"lora_layers", ttt.lora_layers},
                       {"lora_rank", ttt.lora_rank},
                       {"lora_alpha", ttt.lora_alpha},
                       {"steps", ttt.steps},
                       {"batch_size", ttt.batch_size},
                       {"lr", ttt.lr},
                       {"seed", ttt.seed},
                       {"objective", ttt.objective}}},
                     {"sets", sets_json}};
}

VqTttStudy run_vq_ttt_study(const VqTttStudyOptions& o) {
  LR_CHECK(!o.out.empty(), InvalidArgument, "--out: an output directory is required");
  std::vector<data::DegradationSpec> specs{data::DegradationSpec{}};
  for (const std::string& d : o.degradations) specs.push_back(data::parse_degradation(d));
  const Json config = read_json_file(o.model / "config.json");
  LR_CHECK(
      nn::is_image_classifier_config(config), InvalidArgument, "model ", o.model.string(),
      ": VQ-TTT needs a LowrankMixerForImageClassification (its config.json names another architecture)");
  nn::ImageClassifier model = nn::ImageClassifier::load(o.model);
  const TaskDataset task = TaskDataset::open(o.task);
  check_task_fits(model, task);
  { const adapt::VqTtt probe(model, o.ttt); }  // its config errors before any evaluation
  int64_t n = task.info().splits[static_cast<int>(o.split)].examples;
  if (o.max_examples > 0) n = std::min(n, o.max_examples);
  LR_CHECK(n > 0, InvalidArgument, "task ", o.task.string(), ": the ", data::tasks::split_name(o.split),
           " split is empty");
  std::vector<int64_t> rows(static_cast<size_t>(n));
  std::iota(rows.begin(), rows.end(), int64_t{0});
  const TaskBatch batch = task_batch(task, o.split, rows);
  const auto& c = model.config();
  const at::Tensor clean = batch_pixels(batch, c.image_height, c.image_width, c.num_channels).contiguous();
  const at::Tensor labels = batch.labels.to(at::kLong);

  VqTttStudy study;
  study.model = o.model.string();
  study.task = o.task.string();
  study.split = data::tasks::split_name(o.split);
  study.examples = n;
  study.ttt = o.ttt;
  at::Tensor clean_correct;
  for (const data::DegradationSpec& spec : specs) {
    VqTttSetResult r;
    r.degradation = spec.name();
    r.restoration = restoration_for(r.degradation);
    log::info("vq-ttt: ", r.degradation);
    const at::Tensor images = data::degrade(clean, spec, o.ttt.seed);
    const auto frozen_fn = [&](const at::Tensor& x) { return model.forward(x); };
    const at::Tensor frozen = predict(images, frozen_fn);
    r.frozen = accuracy(frozen, labels);
    r.restored = accuracy(predict(restore(images, r.restoration), frozen_fn), labels);
    const at::Tensor correct = frozen.eq(labels);
    if (!clean_correct.defined()) clean_correct = correct;
    r.improved = rows_where(correct & ~clean_correct);
    r.worsened = rows_where(~correct & clean_correct);
    for (int64_t k = 0; k < c.num_labels; ++k) {
      const at::Tensor in_class = labels.eq(k);
      const int64_t count = in_class.sum().item<int64_t>();
      r.class_accuracy.push_back(count == 0
                                     ? 0.0
                                     : static_cast<double>((correct & in_class).sum().item<int64_t>()) /
                                           static_cast<double>(count));
    }
    {
      adapt::VqTtt ttt(model, o.ttt);
      r.ttt_losses = ttt.adapt(images);
      r.vq_ttt = accuracy(predict(images, [&](const at::Tensor& x) { return ttt.logits(x); }), labels);
    }
    study.sets.push_back(std::move(r));
  }
  fs::create_directories(o.out);
  write_file_atomic(o.out / "report.json", study.to_json().dump(1) + "\n");
  return study;
}

}  // namespace lowrank::train
