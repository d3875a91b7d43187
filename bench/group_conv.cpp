// The Monte-Carlo group convolution (nn/lie_group.h, GroupConv2d) against its sample count: the
// forward of 8 → 8 channels, 5 × 5 windows, 8 output elements, on 16 × 16 maps, batch 8, float32,
// for M = 4 … 64 input elements. The layer is one conv2d with C·M input channels (plus the kernel
// MLP at N·M·k² points), so its time should be linear in M: the table reports time per input
// element and the fitted slope of log time on log M (target: linear, slope ≈ 1).
//
//   build/bin/bench_group_conv [--out bench/results/group_conv.json] [--repeats 7]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/nn/lie_group.h"
#include "timing.h"

int main(int argc, char** argv) {
  std::string out = "bench/results/group_conv.json";
  int repeats = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::stoi(argv[i + 1]);
  }
  const int64_t channels = 8, kernel = 5, size = 16, batch = 8, outputs = 8;
  const lowrank::nn::GroupConv2d conv = lowrank::nn::GroupConv2d::random(channels, channels, kernel, 16, 1);
  const at::Tensor h = lowrank::nn::sample_gl2_haar(outputs, 0.5, 0.25, 2);
  std::printf(
      "group conv forward, %lld->%lld channels, %lldx%lld, batch %lld, %lld output elements, %d threads\n",
      static_cast<long long>(channels), static_cast<long long>(channels), static_cast<long long>(size),
      static_cast<long long>(size), static_cast<long long>(batch), static_cast<long long>(outputs),
      at::get_num_threads());
  std::printf("%5s %10s %14s\n", "M", "ms", "us_per_sample");
  lowrank::Json rows = lowrank::Json::array();
  std::vector<double> lx, ly;
  at::NoGradGuard no_grad;
  for (int64_t m : {4, 8, 16, 32, 64}) {
    const at::Tensor g = lowrank::nn::sample_gl2_haar(m, 0.5, 0.25, 3);
    const at::Tensor x = at::randn({batch, channels, m, size, size});
    const double t = lowrank::bench::median_seconds([&] { (void)conv.forward(x, g, h); }, repeats);
    std::printf("%5lld %10.3f %14.2f\n", static_cast<long long>(m), t * 1e3,
                t * 1e6 / static_cast<double>(m));
    rows.push_back({{"samples", m}, {"ms", t * 1e3}});
    lx.push_back(std::log(static_cast<double>(m)));
    ly.push_back(std::log(t));
  }
  double mx = 0, my = 0, sxy = 0, sxx = 0;
  for (size_t i = 0; i < lx.size(); ++i) {
    mx += lx[i] / static_cast<double>(lx.size());
    my += ly[i] / static_cast<double>(ly.size());
  }
  for (size_t i = 0; i < lx.size(); ++i) {
    sxy += (lx[i] - mx) * (ly[i] - my);
    sxx += (lx[i] - mx) * (lx[i] - mx);
  }
  std::printf("slope of log time on log M: %.3f\n", sxy / sxx);
  lowrank::write_json_file(out, lowrank::Json{{"benchmark", "group_conv"},
                                              {"channels", channels},
                                              {"kernel_size", kernel},
                                              {"size", size},
                                              {"batch", batch},
                                              {"output_elements", outputs},
                                              {"threads", at::get_num_threads()},
                                              {"repeats", repeats},
                                              {"slope", sxy / sxx},
                                              {"rows", rows}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
