// The visual-quality study and VQ-TTT on an image task (Xing et al., 2025, "Demystifying the Visual
// Quality Paradox in Multimodal Large Language Models"; adapt/vq_ttt.h, data/image_degrade.h),
// with a frozen image classifier of this library standing in for the frozen vision encoder:
//
// For the clean images of a split and each degradation set (data::degrade at a severity):
//   frozen     the model's accuracy as it is;
//   restored   its accuracy after a fixed restoration filter chosen by the artefact's family, the
//              "off-the-shelf restoration" of the paper: denoise (Gaussian blur, σ = 0.8) for noise,
//              jpeg and sharpen; deblur (unsharp masking, x + 1.0·(x − blur_{σ=1}(x))) for blur and
//              downsample; autocontrast (per-image min-max stretch) for contrast and gamma;
//   vq_ttt     VQ-TTT adapted on that set's unlabeled images (entropy minimisation), then one
//              forward pass per image.
// Per instance against clean: `improved` are the images the frozen model gets wrong clean and right
// under the degradation (the paradox, per instance), `worsened` the reverse; per class: each class's
// accuracy. Each set's VQ-TTT starts from the same frozen model and seed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/adapt/vq_ttt.h"
#include "lowrank/core/json.h"
#include "lowrank/data/tasks/task_format.h"
#include "lowrank/train/classify.h"

namespace lowrank::train {

struct VqTttStudyOptions {
  std::filesystem::path model;            // a LowrankMixerForImageClassification directory
  std::filesystem::path task;             // an image task (fmnist)
  std::vector<std::string> degradations;  // "kind:severity" (clean is always the first set)
  data::tasks::Split split = data::tasks::Split::kTest;
  int64_t max_examples = 0;  // 0: the whole split
  adapt::VqTttConfig ttt;
  std::filesystem::path out;  // directory for report.json
};

struct VqTttSetResult {
  std::string degradation;  // "clean", "blur:2", ...
  std::string restoration;  // "none", "denoise", "deblur", "autocontrast"
  AccuracyResult frozen, restored, vq_ttt;
  std::vector<int64_t> improved, worsened;  // row indices against clean (frozen model)
  std::vector<double> class_accuracy;       // frozen, per class
  std::vector<double> ttt_losses;           // VQ-TTT's entropy per step
  OrderedJson to_json() const;
};

struct VqTttStudy {
  std::string model, task, split;
  int64_t examples = 0;
  adapt::VqTttConfig ttt;
  std::vector<VqTttSetResult> sets;  // clean first
  OrderedJson to_json() const;
};

// The named restoration of a degradation kind (see above) applied to images [B, C, H, W] in [0, 1].
at::Tensor restore(const at::Tensor& images, const std::string& restoration);
std::string restoration_for(const std::string& degradation);

// Runs the study and writes OUT/report.json (atomically). Throws InvalidArgument for a model that
// is not an image classifier, a task whose layout does not fit it, an unknown degradation (naming
// it), or an empty split; NotFound / Corruption from the files.
VqTttStudy run_vq_ttt_study(const VqTttStudyOptions& options);

}  // namespace lowrank::train
