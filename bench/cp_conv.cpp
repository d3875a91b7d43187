// A-priori CP convolution (nn/cp_conv.h) against the dense convolution it replaces, in one run:
// forward + backward (gradients of every parameter and of the input) of a k×k conv from 32 to 32
// channels on 64×64 maps, batch 8, float32: at::conv2d with a dense [32, 32, k, k] kernel against
// the four-conv CP path at ranks 4, 8, 16 (parameters R(T + S + 2k) against T·S·k²). Each row is
// the interleaved median of the two; "dense/cp" > 1 means the CP path is faster.
// Target (issue: a-priori compressed convolutions): R = 8, k = 3 … 7: ≥ 1.5× dense.
//
//   build/bin/bench_cp_conv [--out bench/results/cp_conv.json] [--repeats 5]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "lowrank/core/json.h"
#include "lowrank/nn/cp_conv.h"
#include "timing.h"

int main(int argc, char** argv) {
  std::string out = "bench/results/cp_conv.json";
  int repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::stoi(argv[i + 1]);
  }
  const int64_t channels = 32, size = 64, batch = 8;
  std::printf("CP conv vs dense conv2d, fwd+bwd, %lld->%lld channels, %lldx%lld, batch %lld, %d threads\n",
              static_cast<long long>(channels), static_cast<long long>(channels),
              static_cast<long long>(size), static_cast<long long>(size), static_cast<long long>(batch),
              at::get_num_threads());
  std::printf("%3s %4s %10s %10s %9s %12s %12s %10s\n", "k", "R", "dense_ms", "cp_ms", "dense/cp",
              "dense_params", "cp_params", "max_diff");
  lowrank::Json rows = lowrank::Json::array();
  for (int64_t k : {3, 5, 7}) {
    for (int64_t rank : {4, 8, 16}) {
      at::manual_seed(1);
      lowrank::nn::CpConv2d cp = lowrank::nn::CpConv2d::random(channels, channels, k, rank, 1);
      for (at::Tensor* p : {&cp.a, &cp.b, &cp.c, &cp.d, &cp.bias}) p->requires_grad_(true);
      const at::Tensor weight = cp.kernel().detach().clone().requires_grad_(true);
      const at::Tensor bias = cp.bias.detach().clone().requires_grad_(true);
      const at::Tensor x = at::randn({batch, channels, size, size}).requires_grad_(true);
      const at::Tensor g = at::randn({batch, channels, size, size});
      const std::vector<double> t = lowrank::bench::interleaved_median_seconds(
          {[&] { (at::conv2d(x, weight, bias, 1, k / 2) * g).sum().backward(); },
           [&] { (cp.forward(x) * g).sum().backward(); }},
          repeats);
      double diff = 0;
      {
        at::NoGradGuard no_grad;
        diff = (cp.forward(x) - at::conv2d(x, weight, bias, 1, k / 2)).abs().max().item<double>();
      }
      const int64_t dense_params = weight.numel() + bias.numel();
      std::printf("%3lld %4lld %10.2f %10.2f %9.2f %12lld %12lld %10.2e\n", static_cast<long long>(k),
                  static_cast<long long>(rank), t[0] * 1e3, t[1] * 1e3, t[0] / t[1],
                  static_cast<long long>(dense_params), static_cast<long long>(cp.parameter_count()), diff);
      rows.push_back({{"kernel_size", k},
                      {"rank", rank},
                      {"dense_ms", t[0] * 1e3},
                      {"cp_ms", t[1] * 1e3},
                      {"dense_over_cp", t[0] / t[1]},
                      {"dense_parameters", dense_params},
                      {"cp_parameters", cp.parameter_count()},
                      {"max_abs_diff", diff}});
    }
  }
  lowrank::write_json_file(out, lowrank::Json{{"benchmark", "cp_conv"},
                                              {"dtype", "float32"},
                                              {"channels", channels},
                                              {"size", size},
                                              {"batch", batch},
                                              {"threads", at::get_num_threads()},
                                              {"repeats", repeats},
                                              {"rows", rows}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
