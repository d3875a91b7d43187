// The CUDA kernels against the library calls they replace, timed in the same process on the same
// GPU (a CUDA build on a machine with a GPU; elsewhere it says so and exits 0):
//   1. W4A16 / W8A16 GEMV (ops/group_quant_cuda.cu) vs the dense bfloat16 product (cuBLAS) and vs
//      dequantise + cuBLAS, at decode row counts, on LLaMA-7B projection shapes;
//   2. the gathered LoRA kernel (ops/lora_gather_cuda.cu, BGMV: one launch per batch) vs the
//      segment form (a GEMM pair per adapter, as nn::LinearSlot runs longer segments), one decode
//      row per adapter, float32.
// Each time is the median over 15 rounds (the candidates interleaved) of 50 back-to-back calls
// followed by one device synchronisation; correctness (max relative difference) is printed beside.
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#ifdef LOWRANK_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>

#include "lowrank/ops/group_quant.h"
#include "lowrank/ops/lora_gather.h"
#include "timing.h"
#endif

namespace {

#ifdef LOWRANK_WITH_CUDA
using lowrank::bench::interleaved_median_seconds;

const at::Device kCuda(at::kCUDA, 0);
constexpr int kCalls = 50;

// Microseconds per call of each function: kCalls calls, then a device synchronisation.
std::vector<double> per_call_us(const std::vector<std::function<void()>>& fns) {
  std::vector<std::function<void()>> batched;
  for (const auto& fn : fns)
    batched.push_back([fn] {
      for (int i = 0; i < kCalls; ++i) fn();
      c10::cuda::device_synchronize();
    });
  std::vector<double> s = interleaved_median_seconds(batched, 15);
  for (double& v : s) v *= 1e6 / kCalls;
  return s;
}

double rel_max_error(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor bd = b.to(at::kCPU, at::kDouble);
  return (a.to(at::kCPU, at::kDouble) - bd).abs().max().item<double>() / bd.abs().max().item<double>();
}

void group_quant_gemv() {
  std::printf("\n1. Packed weight GEMV, bfloat16 activations (us per call; ratio = dense bf16 / packed)\n");
  std::printf("%-6s %-12s %5s %10s %10s %12s %8s %10s\n", "bits", "out x in", "rows", "packed", "dense",
              "dequant+mm", "ratio", "rel.err");
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
  for (int bits : {4, 8}) {
    for (const auto& [out, in] : shapes) {
      const at::Tensor W = at::randn({out, in}) * 0.02;
      const lowrank::ops::GroupQuantized q = lowrank::ops::quantize_groups(W, bits, 64).to(kCuda);
      const at::Tensor dense = q.dequantize(at::kBFloat16);  // the same weights, stored dense
      for (int64_t rows : {1, 4, 16}) {
        const at::Tensor x = at::randn({rows, in}).to(kCuda, at::kBFloat16);
        const at::Tensor y = lowrank::ops::group_quant_linear(x, q);
        const double err = rel_max_error(y, at::linear(x.to(at::kFloat), dense.to(at::kFloat)));
        const std::vector<double> us = per_call_us(
            {[&] { (void)lowrank::ops::group_quant_linear(x, q); }, [&] { (void)at::linear(x, dense); },
             [&] { (void)at::linear(x, q.dequantize(at::kBFloat16)); }});
        std::printf("%-6d %-12s %5lld %10.1f %10.1f %12.1f %7.2fx %10.2e\n", bits,
                    (std::to_string(out) + "x" + std::to_string(in)).c_str(), static_cast<long long>(rows),
                    us[0], us[1], us[2], us[1] / us[0], err);
      }
    }
  }
}

void lora_gather() {
  std::printf(
      "\n2. Mixed-adapter LoRA, one decode row per adapter, float32, h = 4096 "
      "(us per call; ratio = segment form / gathered)\n");
  std::printf("%9s %-14s %10s %10s %8s %10s\n", "adapters", "ranks", "gathered", "segments", "ratio",
              "rel.err");
  const int64_t h = 4096;
  for (const bool mixed : {false, true}) {
    for (int64_t n : {1, 4, 16, 64}) {
      std::vector<at::Tensor> as, bs;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = mixed ? int64_t{8} << (i % 4) : 16;
        as.push_back(at::randn({r, h}, at::TensorOptions().device(kCuda)) * 0.02);
        bs.push_back(at::randn({h, r}, at::TensorOptions().device(kCuda)) * 0.02);
      }
      const at::Tensor x = at::randn({n, h}, at::TensorOptions().device(kCuda));
      at::Tensor y_gather = at::zeros({n, h}, x.options()), y_segments = at::zeros({n, h}, x.options());
      std::vector<lowrank::ops::LoraGatherTask> tasks;
      for (int64_t i = 0; i < n; ++i)
        tasks.push_back({x[i].const_data_ptr<float>(), y_gather[i].mutable_data_ptr<float>(),
                         as[i].const_data_ptr<float>(), bs[i].const_data_ptr<float>(), 1, h, h, as[i].size(0),
                         2.0f});
      auto gathered = [&] { lowrank::ops::lora_gather_cuda(tasks, 0); };
      auto segments = [&] {
        for (int64_t i = 0; i < n; ++i) {
          at::Tensor yi = y_segments.narrow(0, i, 1);
          yi.addmm_(at::matmul(x.narrow(0, i, 1), as[i].t()), bs[i].t(), 1.0, 2.0);
        }
      };
      gathered();
      segments();
      const double err = rel_max_error(y_gather, y_segments);
      const std::vector<double> us = per_call_us({gathered, segments});
      std::printf("%9lld %-14s %10.1f %10.1f %7.2fx %10.2e\n", static_cast<long long>(n),
                  mixed ? "8/16/32/64" : "16", us[0], us[1], us[1] / us[0], err);
    }
  }
}
#endif

}  // namespace

int main() {
#ifdef LOWRANK_WITH_CUDA
  if (!at::hasCUDA()) {
    std::printf("bench_cuda: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  at::manual_seed(0);
  group_quant_gemv();
  lora_gather();
#else
  std::printf("bench_cuda: this build has no CUDA (configure with -DLOWRANK_CUDA=ON); nothing to measure\n");
#endif
  return 0;
}
