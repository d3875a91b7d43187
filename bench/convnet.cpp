// ConvNets (nn/convnet.h): images/s of the MetaNeXt net with InceptionNeXt's mixer against the same
// net with ConvNeXt's 7x7 depthwise conv (training: forward + backward; inference: eval forward), and
// of UniRepLKNet's deploy form against its training form at inference (eval mode), with the largest
// logit difference between the two forms. Each pair is timed interleaved in one run, so that their
// ratio is free of machine drift.
// The targets: InceptionNeXt's training images/s ≥ 1.2× the 7x7 net's (paper: 1.6× on an
// A100); the deploy form ≥ 1.5× the training form at inference.
//
//   build/bin/bench_convnet [--out bench/results/convnet.json] [--repeats 5] [--batch 32]
//                           [--size 28] [--width 32] [--device cpu|cuda]
//   build/bin/bench_convnet --tiny      (a few milliseconds: the smoke run)
#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/nn/convnet.h"
#include "timing.h"

namespace {

using lowrank::Json;
using lowrank::nn::ConvNet;
using lowrank::nn::ConvNetConfig;

// Two stages (depth 2 each, widths w and 2w) at patch 2, as the metanext-tiny preset.
ConvNetConfig config(const std::string& block, const std::string& mixer, int64_t kernel, int64_t size,
                     int64_t width) {
  Json s0{{"depth", 2}, {"hidden_size", width}, {"block", block}, {"mixer", mixer}};
  Json s1{{"depth", 2}, {"hidden_size", 2 * width}, {"block", block}, {"mixer", mixer}};
  if (kernel > 0) s0["kernel_size"] = s1["kernel_size"] = kernel;
  return ConvNetConfig::from_json(Json{{"architectures", {"LowrankConvNetForImageClassification"}},
                                       {"model_type", "lowrank_convnet"},
                                       {"image_size", size},
                                       {"num_channels", 1},
                                       {"patch_size", 2},
                                       {"num_labels", 10},
                                       {"stages", {s0, s1}}},
                                  "bench");
}

}  // namespace

int main(int argc, char** argv) {
  std::string out = "bench/results/convnet.json", device_name = "cpu";
  int repeats = 5;
  int64_t batch = 32, size = 28, width = 32;
  bool tiny = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tiny") == 0) tiny = true;
    if (i + 1 >= argc) continue;
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--batch") == 0) batch = std::stoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--size") == 0) size = std::stoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--width") == 0) width = std::stoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--device") == 0) device_name = argv[i + 1];
  }
  if (tiny) {
    batch = 2;
    size = 16;
    width = 8;
    repeats = 1;
  }
  const at::Device device(device_name);
  const lowrank::nn::LoadOptions options{at::kFloat, device};
  at::manual_seed(1);
  const at::Tensor pixels = at::rand({batch, 1, size, size}).to(device);
  const at::Tensor labels = at::randint(0, 10, {batch}, at::kLong).to(device);
  // A device-to-host copy waits for the stream: the timings include the GPU's work.
  auto sync = [&] {
    if (device.is_cuda()) (void)at::zeros({1}, at::TensorOptions().device(device)).cpu();
  };
  Json results = Json::array();

  // InceptionNeXt vs 7x7 DW in the same MetaNeXt net: training steps and inference.
  ConvNet inception = ConvNet::random(config("metanext", "inception_dw", 0, size, width), 1, options);
  ConvNet dw7 = ConvNet::random(config("metanext", "dwconv", 7, size, width), 1, options);
  for (ConvNet* m : {&inception, &dw7})
    for (auto& [n, t] : m->named_parameters()) t.requires_grad_(true);
  auto train_step = [&](ConvNet& m) {
    return [&] {
      const at::Tensor loss = at::cross_entropy_loss(m.forward(pixels, true), labels);
      loss.backward();
      sync();
    };
  };
  auto infer = [&](const ConvNet& m) {
    return [&] {
      at::NoGradGuard no_grad;
      (void)m.forward(pixels);
      sync();
    };
  };
  const std::vector<double> train_t =
      lowrank::bench::interleaved_median_seconds({train_step(inception), train_step(dw7)}, repeats);
  const std::vector<double> infer_t =
      lowrank::bench::interleaved_median_seconds({infer(inception), infer(dw7)}, repeats);
  const double b = static_cast<double>(batch);
  std::printf("%-34s %14s %14s %8s\n", "row", "a_images_s", "b_images_s", "a/b");
  std::printf("%-34s %14.1f %14.1f %8.2f\n", "train: inception_dw / dwconv7", b / train_t[0], b / train_t[1],
              train_t[1] / train_t[0]);
  std::printf("%-34s %14.1f %14.1f %8.2f\n", "infer: inception_dw / dwconv7", b / infer_t[0], b / infer_t[1],
              infer_t[1] / infer_t[0]);
  results.push_back({{"row", "metanext_train"},
                     {"inception_dw_images_s", b / train_t[0]},
                     {"dwconv7_images_s", b / train_t[1]},
                     {"ratio", train_t[1] / train_t[0]}});
  results.push_back({{"row", "metanext_infer"},
                     {"inception_dw_images_s", b / infer_t[0]},
                     {"dwconv7_images_s", b / infer_t[1]},
                     {"ratio", infer_t[1] / infer_t[0]}});

  // UniRepLKNet (dilated reparam, K = 13): deploy form vs training form at inference.
  ConvNet unirep = ConvNet::random(config("unireplknet", "dilated_reparam", 13, size, width), 1, options);
  {
    // Away from the initialisation, whose layer scale γ = 1e-6 would hide any difference between
    // the two forms below float32's resolution of the logits.
    at::NoGradGuard no_grad;
    for (auto& [n, t] : unirep.named_parameters()) t.add_(at::randn_like(t) * 0.1);
  }
  const ConvNet deployed = unirep.deploy();
  const std::vector<double> t =
      lowrank::bench::interleaved_median_seconds({infer(unirep), infer(deployed)}, repeats);
  double diff = 0;
  {
    at::NoGradGuard no_grad;
    diff = (unirep.forward(pixels) - deployed.forward(pixels)).abs().max().item<double>();
  }
  std::printf("%-34s %14.1f %14.1f %8.2f   max |logit diff| %.2e\n", "infer: deploy / training (K=13)",
              b / t[1], b / t[0], t[0] / t[1], diff);
  results.push_back({{"row", "unireplknet_infer"},
                     {"deploy_images_s", b / t[1]},
                     {"training_images_s", b / t[0]},
                     {"ratio", t[0] / t[1]},
                     {"max_logit_diff", diff}});
  const Json report{{"device", device_name}, {"batch", batch},     {"size", size},
                    {"width", width},        {"repeats", repeats}, {"rows", results}};
  if (!tiny) std::ofstream(out) << report.dump(2) << "\n";
  return 0;
}
