// The selective scan (ops/selective_scan.h) against a float64 reference written here from the
// authors' selective_scan_ref (state-spaces/mamba, mamba_ssm/ops/selective_scan_interface.py):
// Δ-bias and softplus, ΔA and ΔB·u discretised for the whole sequence at once, the state loop, D
// and the SiLU(z) gate. Forward of the CPU kernel and of the ATen composite; the hand-written
// backward against autograd through that reference (every input, the initial state and the last
// state's gradient, for chunk sizes that split the sequence evenly, unevenly and not at all);
// float32 inputs within 1e-5 (N = 8: the AVX2 path where the CPU has it); the AVX2 step against
// the portable one and its exp against std::exp; bad shapes refused naming the argument.
#include "lowrank/ops/selective_scan.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/ops/selective_scan_kernels.h"

namespace lowrank::ops {
namespace {

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

struct Inputs {
  at::Tensor u, delta, A, B, C, D, z, bias, h0;
  std::vector<at::Tensor> all() const { return {u, delta, A, B, C, D, z, bias, h0}; }
};

Inputs make_inputs(int64_t batch, int64_t L, int64_t D, int64_t N, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  auto randn = [&](std::vector<int64_t> shape, double scale) {
    return (at::randn(shape, gen, opts) * scale).requires_grad_(true);
  };
  Inputs in;
  in.u = randn({batch, L, D}, 1.0);
  in.delta = randn({batch, L, D}, 0.5);
  // A = −exp(A_log) < 0, as the mixer builds it.
  in.A = (-at::exp(at::randn({D, N}, gen, opts) * 0.5)).requires_grad_(true);
  in.B = randn({batch, L, N}, 1.0);
  in.C = randn({batch, L, N}, 1.0);
  in.D = randn({D}, 1.0);
  in.z = randn({batch, L, D}, 1.0);
  in.bias = randn({D}, 0.3);
  in.h0 = randn({batch, D, N}, 0.5);
  return in;
}

// selective_scan_ref in float64, position-major: returns y [b, L, D] and the last state [b, D, N].
std::pair<at::Tensor, at::Tensor> reference(const Inputs& in, bool with_extras) {
  at::Tensor dt = in.delta;
  if (with_extras) dt = at::softplus(dt + in.bias);
  const int64_t L = in.u.size(1);
  // deltaA [b, L, D, N] = exp(Δ ⊗ A); deltaB_u [b, L, D, N] = Δ u ⊗ B.
  const at::Tensor deltaA = at::exp(dt.unsqueeze(-1) * in.A);
  const at::Tensor deltaB_u = (dt * in.u).unsqueeze(-1) * in.B.unsqueeze(2);
  at::Tensor x = with_extras ? in.h0 : at::zeros_like(in.h0);
  std::vector<at::Tensor> ys;
  for (int64_t i = 0; i < L; ++i) {
    x = deltaA.select(1, i) * x + deltaB_u.select(1, i);
    ys.push_back((x * in.C.select(1, i).unsqueeze(1)).sum(-1));
  }
  at::Tensor y = at::stack(ys, 1);
  if (with_extras) y = (y + in.u * in.D) * at::silu(in.z);
  return {y, x};
}

SelectiveScanOptions extras(const Inputs& in, int64_t chunk) {
  SelectiveScanOptions o;
  o.D = in.D;
  o.z = in.z;
  o.delta_bias = in.bias;
  o.delta_softplus = true;
  o.initial_state = in.h0;
  o.chunk = chunk;
  return o;
}

// A loss that weights every output and the last state, so every gradient path is exercised.
at::Tensor loss_of(const at::Tensor& y, const at::Tensor& last, const at::Tensor& wy, const at::Tensor& wh) {
  return (y.to(at::kDouble) * wy).sum() + (last.to(at::kDouble) * wh).sum();
}

TEST(SelectiveScanTest, ForwardMatchesTheReferenceOnBothPaths) {
  const Inputs in = make_inputs(2, 9, 5, 4, 1);
  at::NoGradGuard no_grad;
  for (bool with_extras : {false, true}) {
    const auto [want_y, want_h] = reference(in, with_extras);
    SelectiveScanOptions o = with_extras ? extras(in, 4) : SelectiveScanOptions{};
    const SelectiveScanResult got = selective_scan(in.u, in.delta, in.A, in.B, in.C, o);
    EXPECT_LE(max_diff(got.y, want_y), 1e-12) << "extras " << with_extras;
    EXPECT_LE(max_diff(got.last_state, want_h), 1e-12);
    const at::Tensor h0 = with_extras ? in.h0 : at::zeros_like(in.h0);
    if (!with_extras) {
      const SelectiveScanResult comp = selective_scan_core_composite(in.u, in.delta, in.A, in.B, in.C, h0);
      EXPECT_LE(max_diff(comp.y, want_y), 1e-12);
      EXPECT_LE(max_diff(comp.last_state, want_h), 1e-12);
    }
  }
}

TEST(SelectiveScanTest, Float32WithinTolerance) {
  const Inputs in = make_inputs(2, 12, 20, 8, 2);  // 20 channels: a partial block
  at::NoGradGuard no_grad;
  const auto [want_y, want_h] = reference(in, true);
  Inputs f;
  std::vector<at::Tensor*> fs = {&f.u, &f.delta, &f.A, &f.B, &f.C, &f.D, &f.z, &f.bias, &f.h0};
  const std::vector<at::Tensor> src = in.all();
  for (size_t i = 0; i < fs.size(); ++i) *fs[i] = src[i].detach().to(at::kFloat);
  const SelectiveScanResult got = selective_scan(f.u, f.delta, f.A, f.B, f.C, extras(f, 5));
  EXPECT_EQ(got.y.scalar_type(), at::kFloat);
  EXPECT_LE(max_diff(got.y, want_y), 1e-5);
  EXPECT_LE(max_diff(got.last_state, want_h), 1e-5);
}

// exp of a vector kernel (8 or 16 lanes) over the scan's range (Δ·A ≤ 0) and beyond, against
// std::exp in float64: the worst relative error.
template <int Lanes>
double worst_exp_error(void (*vector_exp)(const float*, float*)) {
  double worst = 0;
  for (double x = -87.0; x <= 87.0; x += 0.0137) {
    float in[Lanes], out[Lanes];
    for (int i = 0; i < Lanes; ++i) in[i] = static_cast<float>(x + i * 1.7e-3);
    vector_exp(in, out);
    for (int i = 0; i < Lanes; ++i) {
      const double want = std::exp(static_cast<double>(in[i]));
      worst = std::max(worst, std::abs(out[i] - want) / want);
    }
  }
  return worst;
}

using StepFn = void (*)(int64_t, int64_t, const float*, const float*, const float*, const float*,
                        const float*, float*, float*);

// A vector step against the portable one: `channels` channels of N states over 20 positions;
// states and outputs within float32 rounding.
void expect_step_matches_portable(StepFn step, int64_t channels, int64_t N) {
  at::manual_seed(9);
  const at::Tensor A = -at::exp(at::randn({channels, N})), delta = at::rand({20, channels}) * 0.5;
  const at::Tensor u = at::randn({20, channels}), Bm = at::randn({20, N}), Cm = at::randn({20, N});
  at::Tensor h_vec = at::randn({channels, N}), h_port = h_vec.clone();
  at::Tensor y_vec = at::zeros({20, channels}), y_port = at::zeros({20, channels});
  for (int64_t l = 0; l < 20; ++l) {
    step(channels, N, delta[l].data_ptr<float>(), u[l].data_ptr<float>(), A.data_ptr<float>(),
         Bm[l].data_ptr<float>(), Cm[l].data_ptr<float>(), h_vec.data_ptr<float>(),
         y_vec[l].data_ptr<float>());
    detail::selective_scan_step_portable(channels, N, delta[l].data_ptr<float>(), u[l].data_ptr<float>(),
                                         A.data_ptr<float>(), Bm[l].data_ptr<float>(),
                                         Cm[l].data_ptr<float>(), h_port.data_ptr<float>(),
                                         y_port[l].data_ptr<float>());
  }
  EXPECT_LE(max_diff(h_vec, h_port), 1e-5 * h_port.abs().max().item<double>()) << "N " << N;
  EXPECT_LE(max_diff(y_vec, y_port), 1e-5 * y_port.abs().max().item<double>()) << "N " << N;
}

TEST(SelectiveScanTest, Avx2StepMatchesThePortableStep) {
  if (!selective_scan_uses_avx2(16)) GTEST_SKIP() << "no AVX2 + FMA kernels in this build or on this CPU";
  EXPECT_FALSE(selective_scan_uses_avx2(12));
  EXPECT_LT(worst_exp_error<8>(detail::exp_avx2), 3e-7);
  expect_step_matches_portable(detail::selective_scan_step_avx2, 5, 16);
}

TEST(SelectiveScanTest, Avx512StepMatchesThePortableStep) {
  if (!detail::selective_scan_avx512_usable(16))
    GTEST_SKIP() << "no AVX-512 kernel in this build or on this CPU";
  EXPECT_FALSE(detail::selective_scan_avx512_usable(8));
  EXPECT_LT(worst_exp_error<16>(detail::exp_avx512), 3e-7);
  for (const int64_t N : {16, 32}) expect_step_matches_portable(detail::selective_scan_step_avx512, 5, N);
}

// The forward's channel blocks widen with the thread count (fewer threads, wider blocks) and the
// backward's are fixed: outputs, last state and every gradient are the same bits on 1, 3 and 8
// threads (float32, N = 16: the vector steps; D = 200, not a multiple of any block). One row: 1, 3
// and 8 threads give forward blocks of 128, 64 and 16 channels.
TEST(SelectiveScanTest, SameBitsOnAnyThreadCount) {
  at::manual_seed(21);
  const int64_t batch = 1, L = 70, D = 200, N = 16;
  const at::Tensor u = at::randn({batch, L, D}), delta = at::softplus(at::randn({batch, L, D}) - 2);
  const at::Tensor A = -at::exp(at::randn({D, N}) * 0.5), B = at::randn({batch, L, N}),
                   C = at::randn({batch, L, N});
  const at::Tensor h0 = at::randn({batch, D, N}), gy = at::randn({batch, L, D});
  const int threads_before = at::get_num_threads();
  std::vector<std::vector<at::Tensor>> runs;
  for (const int threads : {1, 3, 8}) {
    at::set_num_threads(threads);
    std::vector<at::Tensor> in = {u.clone().requires_grad_(true), delta.clone().requires_grad_(true),
                                  A.clone().requires_grad_(true), B.clone().requires_grad_(true),
                                  C.clone().requires_grad_(true)};
    const SelectiveScanResult r = selective_scan_core_cpu(in[0], in[1], in[2], in[3], in[4], h0, 16);
    std::vector<at::Tensor> out = {r.y.detach(), r.last_state.detach()};
    for (const at::Tensor& g : torch::autograd::grad({(r.y * gy).sum()}, in)) out.push_back(g);
    runs.push_back(out);
  }
  at::set_num_threads(threads_before);
  const char* names[] = {"y", "last_state", "du", "ddelta", "dA", "dB", "dC"};
  for (size_t k = 1; k < runs.size(); ++k)
    for (size_t i = 0; i < runs[0].size(); ++i)
      EXPECT_TRUE(at::equal(runs[k][i], runs[0][i])) << names[i] << ", run " << k;
}

TEST(SelectiveScanTest, HandWrittenBackwardMatchesAutogradThroughTheReference) {
  const Inputs in = make_inputs(2, 10, 70, 3, 3);
  at::Generator gen = at::detail::createCPUGenerator(9);
  const at::Tensor wy = at::randn({2, 10, 70}, gen, at::kDouble);
  const at::Tensor wh = at::randn({2, 70, 3}, gen, at::kDouble);
  const auto [ry, rh] = reference(in, true);
  const std::vector<at::Tensor> inputs = in.all();
  const auto want = torch::autograd::grad({loss_of(ry, rh, wy, wh)}, inputs);
  const char* names[] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"};
  for (int64_t chunk : {1, 3, 10, 64}) {
    const SelectiveScanResult got = selective_scan(in.u, in.delta, in.A, in.B, in.C, extras(in, chunk));
    const auto grads = torch::autograd::grad({loss_of(got.y, got.last_state, wy, wh)}, inputs);
    for (size_t i = 0; i < grads.size(); ++i)
      EXPECT_LE(max_diff(grads[i], want[i]), 1e-10) << names[i] << ", chunk " << chunk;
  }
  // The kernel's backward alone (no D, z, bias): the core's gradients, B and C summed over 70
  // channels in two blocks (64 and 6), A over the batch.
  const auto [cy, ch] = reference(in, false);
  const std::vector<at::Tensor> core = {in.u, in.delta, in.A, in.B, in.C};
  const auto want_core = torch::autograd::grad({loss_of(cy, ch, wy, wh)}, core);
  const SelectiveScanResult got = selective_scan(in.u, in.delta, in.A, in.B, in.C, {});
  const auto grads = torch::autograd::grad({loss_of(got.y, got.last_state, wy, wh)}, core);
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_LE(max_diff(grads[i], want_core[i]), 1e-10) << names[i];
}

// float32 with N = 16 (the AVX2 backward step where the CPU has it, else the portable loop):
// every gradient against autograd through the float64 reference, relative to its largest entry.
TEST(SelectiveScanTest, Float32BackwardMatchesTheFloat64Reference) {
  const Inputs in = make_inputs(2, 12, 70, 16, 4);  // 70 channels: two channel blocks, one partial
  at::Generator gen = at::detail::createCPUGenerator(11);
  const at::Tensor wy = at::randn({2, 12, 70}, gen, at::kDouble);
  const at::Tensor wh = at::randn({2, 70, 16}, gen, at::kDouble);
  const std::vector<at::Tensor> core = {in.u, in.delta, in.A, in.B, in.C};
  const auto [ry, rh] = reference(in, false);
  const auto want = torch::autograd::grad({loss_of(ry, rh, wy, wh)}, core);
  std::vector<at::Tensor> f;
  for (const at::Tensor& t : core) f.push_back(t.detach().to(at::kFloat).requires_grad_(true));
  const char* names[] = {"u", "delta", "A", "B", "C"};
  for (int64_t chunk : {1, 5, 64}) {
    SelectiveScanOptions o;
    o.chunk = chunk;
    const SelectiveScanResult got = selective_scan(f[0], f[1], f[2], f[3], f[4], o);
    const auto grads = torch::autograd::grad({loss_of(got.y, got.last_state, wy, wh)}, f);
    for (size_t i = 0; i < grads.size(); ++i)
      EXPECT_LE(max_diff(grads[i], want[i]), 2e-5 * (1 + want[i].abs().max().item<double>()))
          << names[i] << ", chunk " << chunk;
  }
}

TEST(SelectiveScanTest, BadShapesAreRefusedNamingTheArgument) {
  const Inputs in = make_inputs(1, 4, 3, 2, 4);
  at::NoGradGuard no_grad;
  EXPECT_THROW(
      {
        try {
          selective_scan(in.u, in.delta, in.A, in.B.narrow(2, 0, 1), in.C);
        } catch (const InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("B must be"), std::string::npos) << e.what();
          throw;
        }
      },
      InvalidArgument);
  SelectiveScanOptions o;
  o.chunk = 0;
  EXPECT_THROW(selective_scan(in.u, in.delta, in.A, in.B, in.C, o), InvalidArgument);
  o.chunk = 4;
  o.D = at::ones({4}, at::kDouble);
  EXPECT_THROW(selective_scan(in.u, in.delta, in.A, in.B, in.C, o), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::ops
