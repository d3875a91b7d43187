// Mamba's selective scan (ops/selective_scan.h) on the CPU, in one run:
//   kernel     selective_scan_core_cpu: loops over (row, channel block), the state in a local buffer,
//              each step in AVX-512 (selective_scan_avx512.cpp) or AVX2 + FMA (selective_scan_avx2.cpp)
//              where the CPU has them
//   loop       selective_scan_core_composite: one step of ATen ops per position (what a libtorch
//              port of the recurrence does; transformers' slow path is the same loop in Python)
// forward alone and forward + backward, float32, batch 1, D = 256 channels (mamba-tiny's inner
// width), N = 16, L = 256 … 4096. Each row reports the interleaved medians, loop / kernel, and the
// largest output difference. The scan streams u, Δ (L·D each), B, C (L·N each) and y (L·D) through
// memory once; "GB/s" is those bytes over the kernel's forward time, beside the machine's read
// bandwidth measured in the same run (bandwidth.h), and "Gexp/s" the L·D·N exponentials per second:
// which of the two bounds the kernel is what the numbers say. "port/avx2", "port/avx512": the step
// alone over all channels and positions on one thread, the portable loop's time over the AVX2 and
// the AVX-512 step's.
// Target (Mixers II): kernel ≥ 20× the per-step libtorch loop.
//
//   build/bin/bench_selective_scan [--out bench/results/selective_scan.json] [--repeats 5]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bandwidth.h"
#include "lowrank/core/json.h"
#include "lowrank/ops/selective_scan.h"
#include "lowrank/ops/selective_scan_kernels.h"
#include "timing.h"

int main(int argc, char** argv) {
  std::string out = "bench/results/selective_scan.json";
  int repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::stoi(argv[i + 1]);
  }
  namespace ops = lowrank::ops;
  const int64_t D = 256, N = 16, chunk = 64;
  const double roof = lowrank::bench::read_bandwidth_gbs(at::get_num_threads());
  const bool avx2 = ops::selective_scan_uses_avx2(N);
  const bool avx512 = ops::detail::selective_scan_avx512_usable(N);
  std::printf("read bandwidth (%d threads): %.1f GB/s; kernel steps in %s\n", at::get_num_threads(), roof,
              avx512 ? "AVX-512"
              : avx2 ? "AVX2"
                     : "portable C++");
  std::printf("%-6s %11s %9s %8s %11s %9s %8s %8s %8s %10s %9s %11s\n", "L", "kernel_ms", "loop_ms", "loop/k",
              "k_fb_ms", "loop_fb", "fb x", "GB/s", "Gexp/s", "max_diff", "port/avx2", "port/avx512");
  lowrank::Json rows = lowrank::Json::array();
  for (int64_t L = 256; L <= 4096; L *= 4) {
    at::manual_seed(1);
    const at::Tensor u = at::randn({1, L, D}), delta = at::softplus(at::randn({1, L, D}) - 3);
    const at::Tensor A = -at::exp(at::randn({D, N}) * 0.5), B = at::randn({1, L, N}),
                     C = at::randn({1, L, N});
    const at::Tensor h0 = at::zeros({1, D, N});
    at::Tensor y_kernel, y_loop;
    const std::vector<double> fwd = lowrank::bench::interleaved_median_seconds(
        {[&] {
           at::NoGradGuard g;
           y_kernel = ops::selective_scan_core_cpu(u, delta, A, B, C, h0, chunk).y;
         },
         [&] {
           at::NoGradGuard g;
           y_loop = ops::selective_scan_core_composite(u, delta, A, B, C, h0).y;
         }},
        repeats);
    const double diff = (y_kernel - y_loop).abs().max().item<double>();
    // Forward + backward: the gradient of Σ y ⊙ g with respect to every input.
    const at::Tensor g = at::randn({1, L, D});
    auto train_step = [&](bool kernel) {
      std::vector<at::Tensor> in = {u.clone().requires_grad_(true), delta.clone().requires_grad_(true),
                                    A.clone().requires_grad_(true), B.clone().requires_grad_(true),
                                    C.clone().requires_grad_(true)};
      const at::Tensor y = kernel
                               ? ops::selective_scan_core_cpu(in[0], in[1], in[2], in[3], in[4], h0, chunk).y
                               : ops::selective_scan_core_composite(in[0], in[1], in[2], in[3], in[4], h0).y;
      (y * g).sum().backward();
    };
    const std::vector<double> fb = lowrank::bench::interleaved_median_seconds(
        {[&] { train_step(true); }, [&] { train_step(false); }}, std::max(1, repeats / 2));
    // The step alone, one thread over all D channels and L positions: the AVX2 and AVX-512 steps
    // against the portable loop (the same work, the same order; what the dispatch chooses between).
    enum class Step { kPortable, kAvx2, kAvx512 };
    auto steps = [&](Step kind) {
      at::Tensor h = at::zeros({D, N}), y = at::empty({L, D});
      const float *pu = u.data_ptr<float>(), *pd = delta.data_ptr<float>(), *pa = A.data_ptr<float>(),
                  *pb = B.data_ptr<float>(), *pc = C.data_ptr<float>();
      for (int64_t l = 0; l < L; ++l) {
        if (kind == Step::kAvx512)
          ops::detail::selective_scan_step_avx512(D, N, pd + l * D, pu + l * D, pa, pb + l * N, pc + l * N,
                                                  h.data_ptr<float>(), y.data_ptr<float>() + l * D);
        else if (kind == Step::kAvx2)
          ops::detail::selective_scan_step_avx2(D, N, pd + l * D, pu + l * D, pa, pb + l * N, pc + l * N,
                                                h.data_ptr<float>(), y.data_ptr<float>() + l * D);
        else
          ops::detail::selective_scan_step_portable(D, N, pd + l * D, pu + l * D, pa, pb + l * N, pc + l * N,
                                                    h.data_ptr<float>(), y.data_ptr<float>() + l * D);
      }
    };
    std::vector<std::function<void()>> step_runs = {[&] { steps(Step::kPortable); }};
    if (avx2) step_runs.push_back([&] { steps(Step::kAvx2); });
    if (avx512) step_runs.push_back([&] { steps(Step::kAvx512); });
    std::vector<double> st = lowrank::bench::interleaved_median_seconds(step_runs, repeats);
    const double avx2_step = avx2 ? st[1] : 0.0, avx512_step = avx512 ? st.back() : 0.0;
    const double bytes = 4.0 * (3.0 * double(L * D) + 2.0 * double(L * N));
    const double gbs = bytes / fwd[0] / 1e9, gexp = double(L * D * N) / fwd[0] / 1e9;
    std::printf("%-6lld %11.3f %9.2f %8.1f %11.3f %9.2f %8.1f %8.2f %8.2f %10.2e %9.2f %11.2f\n",
                static_cast<long long>(L), fwd[0] * 1e3, fwd[1] * 1e3, fwd[1] / fwd[0], fb[0] * 1e3,
                fb[1] * 1e3, fb[1] / fb[0], gbs, gexp, diff, avx2 ? st[0] / avx2_step : 0.0,
                avx512 ? st[0] / avx512_step : 0.0);
    rows.push_back({{"L", L},
                    {"kernel_forward_ms", fwd[0] * 1e3},
                    {"loop_forward_ms", fwd[1] * 1e3},
                    {"loop_over_kernel_forward", fwd[1] / fwd[0]},
                    {"kernel_forward_backward_ms", fb[0] * 1e3},
                    {"loop_forward_backward_ms", fb[1] * 1e3},
                    {"loop_over_kernel_forward_backward", fb[1] / fb[0]},
                    {"kernel_gb_per_s", gbs},
                    {"kernel_gexp_per_s", gexp},
                    {"max_abs_diff", diff},
                    {"portable_step_ms", st[0] * 1e3},
                    {"avx2_step_ms", avx2_step * 1e3},
                    {"avx512_step_ms", avx512_step * 1e3}});
  }
  lowrank::write_json_file(out, lowrank::Json{{"benchmark", "selective_scan"},
                                              {"dtype", "float32"},
                                              {"batch", 1},
                                              {"channels", D},
                                              {"state", N},
                                              {"chunk", chunk},
                                              {"avx2", avx2},
                                              {"avx512", avx512},
                                              {"threads", at::get_num_threads()},
                                              {"repeats", repeats},
                                              {"read_bandwidth_gb_per_s", roof},
                                              {"rows", rows}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
