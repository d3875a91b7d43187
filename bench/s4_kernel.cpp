// S4D vs S4 kernel generation: the length-L convolution kernels of H channels with N = 64 states
// (32 complex modes), for L = 1K … 16K.
//   vandermonde  the S4D kernel, K_l = 2 Re Σ_n c_n exp(x_n l): ops::log_vandermonde, chunked; O(H·N·L)
//   cauchy       the S4 (DPLR, rank 1) kernel as mix/s4.cpp computes it: the four resolvents
//                (B, P) × (C̃, Q) by ops::cauchy at the L/2 + 1 roots of unity, the Woodbury
//                correction, the bilinear factor 2/(1 + ω) and irfft; O(H·N·L) divisions + O(H·L log L)
// Both run on the same diagonal system (P = 0, bilinear discretisation; S4 given C̃ = C (1 − Ā^L)), where
// the two methods must give one kernel: `rel_err` = ‖K_cauchy − K_vandermonde‖∞ / ‖K‖∞ is reported
// beside each cauchy timing (a wrong ω, correction or truncation shows there).
//
//   build/bin/bench_s4_kernel [--benchmark_filter=1024] [--channels=256]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <numbers>
#include <string>

#include "lowrank/core/threads.h"
#include "lowrank/ops/cauchy.h"
#include "lowrank/ops/vandermonde.h"

namespace {

int64_t g_channels = 256;
constexpr int64_t kModes = 32;  // N = 64

// A diagonal system, float32: Λ = −½ + iπn (S4D-Lin), Δ log-uniform[1e-3, 1e-1], C ~ CN(0, 1), B = 1.
struct System {
  at::Tensor dt, Lambda, C;  // [H, 1] real, [H, M], [H, M] complex
};

System make_system(int64_t H) {
  at::Generator gen = at::detail::createCPUGenerator(7);
  System s;
  s.dt = at::exp(at::empty({H, 1}).uniform_(std::log(1e-3), std::log(1e-1), gen));
  s.Lambda = at::complex(at::full({H, kModes}, -0.5),
                         std::numbers::pi * at::arange(kModes, at::kFloat).expand({H, kModes}));
  s.C = at::complex(at::randn({H, kModes}, gen), at::randn({H, kModes}, gen)) * std::sqrt(0.5f);
  return s;
}

// Bilinear Ā = (1 + ΔΛ/2)/(1 − ΔΛ/2), B̄ = Δ/(1 − ΔΛ/2): K_l = 2 Re Σ_n C_n B̄_n Ā_n^l.
at::Tensor vandermonde_kernel(const System& s, int64_t L) {
  const at::Tensor w = s.Lambda * s.dt;
  const at::Tensor log_dA = at::log((1 + w / 2) / (1 - w / 2));
  const at::Tensor c = s.C * s.dt / (1 - w / 2);
  return lowrank::ops::log_vandermonde(c, log_dA, L);
}

// mix/s4.cpp's S4::kernel on (Λ, P = 0, B = 1, C̃ = C (1 − Ā^L)), written out: equal to the above.
at::Tensor cauchy_kernel(const System& s, int64_t L) {
  const int64_t H = s.Lambda.size(0);
  const at::Tensor B = at::ones_like(s.C), P = at::zeros_like(s.C);
  const at::Tensor w = s.Lambda * s.dt;
  const at::Tensor log_dA = at::log((1 + w / 2) / (1 - w / 2));
  const at::Tensor C_tilde = s.C * (1 - at::exp(log_dA * static_cast<double>(L)));
  const at::Tensor v = at::stack({B, P}).unsqueeze(1) * at::stack({C_tilde, at::conj(P)}).unsqueeze(0) *
                       s.dt.view({1, 1, H, 1});
  const at::Tensor angle =
      at::arange(L / 2 + 1, at::kDouble) * (-2 * std::numbers::pi / static_cast<double>(L));
  const at::Tensor omega = at::polar(at::ones_like(angle), angle).to(at::kComplexFloat);
  const at::Tensor z = 2 * (1 - omega) / (1 + omega);
  const at::Tensor r = lowrank::ops::cauchy(v.reshape({-1, kModes}), z,
                                            w.unsqueeze(0).expand({4, H, kModes}).reshape({-1, kModes}))
                           .view({2, 2, H, -1});
  const at::Tensor k_f = (r[0][0] - r[0][1] * r[1][0] / (1 + r[1][1])) * (2 / (1 + omega));
  return at::fft_irfft(k_f, L, -1);
}

void bm_vandermonde(benchmark::State& state) {
  const int64_t L = state.range(0);
  const System s = make_system(g_channels);
  for (auto _ : state) benchmark::DoNotOptimize(vandermonde_kernel(s, L).data_ptr());
  state.counters["H"] = static_cast<double>(g_channels);
}

void bm_cauchy(benchmark::State& state) {
  const int64_t L = state.range(0);
  const System s = make_system(g_channels);
  at::Tensor K;
  for (auto _ : state) {
    K = cauchy_kernel(s, L);
    benchmark::DoNotOptimize(K.data_ptr());
  }
  const at::Tensor want = vandermonde_kernel(s, L);
  state.counters["rel_err"] = ((K - want).abs().max() / want.abs().max()).item<double>();
  state.counters["H"] = static_cast<double>(g_channels);
}

}  // namespace

int main(int argc, char** argv) {
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--channels=", 11) == 0)
      g_channels = std::stoll(argv[i] + 11);
    else
      argv[out++] = argv[i];
  }
  argc = out;
  const int threads = lowrank::configure_threads();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  for (const char* name : {"vandermonde", "cauchy"}) {
    auto* b = benchmark::RegisterBenchmark(std::string(name).c_str(),
                                           std::strcmp(name, "cauchy") == 0 ? bm_cauchy : bm_vandermonde);
    for (int64_t L = 1024; L <= 16384; L *= 2) b->Arg(L);
    b->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  std::printf("S4 kernel generation, N = 64 (32 modes), H = %lld, float32, %d intra-op threads\n",
              static_cast<long long>(g_channels), threads);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
