// Long convolution: the FFT convolution (ops/long_fft_conv.h) against the direct causal convolution
// (conv1d, O(L·L')), and the Monarch FFT (ops/monarch_fft.h, the FFT as GEMMs) against at::fft, in one
// run. float32, B = 1, H = 256 channels, kernel length L' = L. Each row reports the interleaved
// medians, the ratios direct / fft and at::fft / monarch, and the largest output differences.
// The targets: report the crossover L* (the first length where FFT beats direct); ≥ 20× at
// 16K; Monarch ≥ 0.5× at::fft on CPU (its IO-aware win is a GPU claim).
//
//   build/bin/bench_fft_conv [--out bench/results/fft_conv.json] [--repeats 5]
//                            [--max-length 65536] [--direct-max 16384]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/ops/long_fft_conv.h"
#include "lowrank/ops/monarch_fft.h"
#include "timing.h"

int main(int argc, char** argv) {
  std::string out = "bench/results/fft_conv.json";
  int repeats = 5;
  int64_t max_length = 65536, direct_max = 16384;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--max-length") == 0) max_length = std::stoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--direct-max") == 0) direct_max = std::stoll(argv[i + 1]);
  }
  using lowrank::ops::FftConvImpl;
  const int64_t H = 256;
  lowrank::Json rows = lowrank::Json::array();
  int64_t crossover = -1;
  std::printf("%-8s %11s %9s %11s %8s %10s %11s %11s %9s\n", "L", "direct_ms", "fft_ms", "monarch_ms",
              "dir/fft", "conv_diff", "atfft_ms", "mfft_ms", "at/mon");
  for (int64_t L = 256; L <= max_length; L *= 2) {
    at::manual_seed(1);
    const at::Tensor u = at::randn({1, H, L}), k = at::randn({H, L}).div(static_cast<double>(L));
    at::Tensor y_fft, y_monarch, y_direct;
    const bool direct = L <= direct_max;
    std::vector<std::function<void()>> fns = {
        [&] { y_fft = lowrank::ops::fft_conv(u, k, FftConvImpl::kFft); },
        [&] { y_monarch = lowrank::ops::fft_conv(u, k, FftConvImpl::kMonarch); }};
    if (direct) fns.push_back([&] { y_direct = lowrank::ops::direct_causal_conv(u, k); });
    const std::vector<double> t = lowrank::bench::interleaved_median_seconds(fns, repeats);
    // The transforms alone at the convolution's FFT length (a power of two: 2L).
    const int64_t n = 2 * L;
    at::Tensor f_at, f_monarch;
    const auto [t_at, t_monarch] = lowrank::bench::paired_median_seconds(
        [&] { f_at = at::fft_fft(u, n); }, [&] { f_monarch = lowrank::ops::monarch_fft(u, n); }, repeats);
    const double fft_diff = (f_at - f_monarch).abs().max().item<double>() / f_at.abs().max().item<double>();
    const double t_direct = direct ? t[2] : 0.0;
    const double conv_diff = direct ? (y_fft - y_direct).abs().max().item<double>()
                                    : (y_fft - y_monarch).abs().max().item<double>();
    if (direct && crossover < 0 && t[0] < t_direct) crossover = L;
    std::printf("%-8lld %11.3f %9.3f %11.3f %8.2f %10.2e %11.3f %11.3f %9.2f\n", static_cast<long long>(L),
                t_direct * 1e3, t[0] * 1e3, t[1] * 1e3, direct ? t_direct / t[0] : 0.0, conv_diff, t_at * 1e3,
                t_monarch * 1e3, t_at / t_monarch);
    lowrank::Json row = {{"L", L},
                         {"fft_ms", t[0] * 1e3},
                         {"monarch_conv_ms", t[1] * 1e3},
                         {"at_fft_ms", t_at * 1e3},
                         {"monarch_fft_ms", t_monarch * 1e3},
                         {"at_fft_over_monarch", t_at / t_monarch},
                         {"monarch_fft_relative_error", fft_diff},
                         {"conv_max_abs_diff", conv_diff}};
    if (direct) {
      row["direct_ms"] = t_direct * 1e3;
      row["direct_over_fft"] = t_direct / t[0];
    }
    rows.push_back(row);
  }
  std::printf("crossover L* (first L where fft < direct): %lld\n", static_cast<long long>(crossover));
  lowrank::write_json_file(out, lowrank::Json{{"benchmark", "fft_conv"},
                                              {"dtype", "float32"},
                                              {"batch", 1},
                                              {"channels", H},
                                              {"threads", at::get_num_threads()},
                                              {"repeats", repeats},
                                              {"crossover_length", crossover},
                                              {"rows", rows}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
