// S4 (mix/s4.h): the Cauchy kernel and its backward against the direct sum and autograd; the NPLR
// form of HiPPO-LegS against the LegS matrix itself (eigenvalues, ‖P‖²); the Cauchy + Woodbury +
// bilinear-correction kernel against the kernel of the dense bilinear-discretised A = Λ − PP*,
// built here with explicit inverses and iterated in float64; step() against forward; param_groups; and
// the refusals (a sequence longer than l_max, odd d_state, bidirectional in an LM).
#include "lowrank/mix/s4.h"

#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <set>

#include "lowrank/core/error.h"
#include "lowrank/ops/cauchy.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/mix/ssm_testing.h"

namespace lowrank::mix {
namespace {

using namespace testing;  // build_mixer, mixer_config, max_diff, tensor_named

TEST(S4Test, CauchyKernelAndItsBackwardEqualTheDirectSum) {
  const int64_t R = 3, N = 5, L = 7;
  const at::Tensor v = at::randn({R, N}, at::kComplexDouble).requires_grad_(true);
  const at::Tensor w = at::randn({R, N}, at::kComplexDouble).requires_grad_(true);
  const at::Tensor z = at::randn({L}, at::kComplexDouble) * 3;
  const at::Tensor g = at::randn({R, L}, at::kComplexDouble);
  for (const bool conj : {false, true}) {
    at::Tensor direct = (v.unsqueeze(-1) / (z - w.unsqueeze(-1))).sum(1);
    if (conj) direct = direct + (at::conj(v).unsqueeze(-1) / (z - at::conj(w).unsqueeze(-1))).sum(1);
    const at::Tensor got = ops::cauchy(v, z, w, conj);
    EXPECT_LE(max_diff(got, direct), 1e-12) << conj;
    // A real loss of the complex output, so both backward passes see the same cotangent.
    const auto want = torch::autograd::grad({at::real(direct * g).sum()}, {v, w});
    const auto mine = torch::autograd::grad({at::real(got * g).sum()}, {v, w});
    EXPECT_LE(max_diff(mine[0], want[0]), 1e-11) << conj;
    EXPECT_LE(max_diff(mine[1], want[1]), 1e-11) << conj;
  }
  // float32
  EXPECT_LE(max_diff(ops::cauchy(v.detach().to(at::kComplexFloat), z.to(at::kComplexFloat),
                                 w.detach().to(at::kComplexFloat))
                         .to(at::kComplexDouble),
                     ops::cauchy(v.detach(), z, w.detach())),
            1e-4);
}

// The dense conjugate-extended A = diag(Λ, Λ̄) − p p*, p = (P, P̄), of channel h.
at::Tensor dense_A(const at::Tensor& Lambda, const at::Tensor& P) {
  const at::Tensor lf = at::cat({Lambda, at::conj(Lambda)}).resolve_conj();
  const at::Tensor pf = at::cat({P, at::conj(P)}).resolve_conj();
  return at::diag(lf) - at::outer(pf, at::conj(pf));
}

TEST(S4Test, LegsNplrIsUnitarilyEquivalentToTheLegsMatrix) {
  const int64_t N = 8;
  at::Tensor legs = at::zeros({N, N}, at::kDouble);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k <= n; ++k)
      legs[n][k] =
          n == k ? -static_cast<double>(n + 1) : -std::sqrt(static_cast<double>((2 * n + 1) * (2 * k + 1)));
  const LegsNplr nplr = legs_nplr(N);
  ASSERT_EQ(nplr.Lambda.size(0), N / 2);
  EXPECT_LE(max_diff(at::real(nplr.Lambda), at::full({N / 2}, -0.5, at::kDouble)), 1e-12);
  EXPECT_TRUE((at::imag(nplr.Lambda) < 0).all().item<bool>());
  // Same spectrum: sort both by (real, imag).
  auto sorted = [](const at::Tensor& eig) {
    std::vector<std::pair<double, double>> e;
    for (int64_t i = 0; i < eig.size(0); ++i)
      e.emplace_back(at::real(eig[i]).item<double>(), at::imag(eig[i]).item<double>());
    std::sort(e.begin(), e.end());
    return e;
  };
  const auto want = sorted(at::linalg_eigvals(legs));
  const auto got = sorted(at::linalg_eigvals(dense_A(nplr.Lambda, nplr.P)));
  for (int64_t i = 0; i < N; ++i) {
    EXPECT_NEAR(got[i].first, want[i].first, 1e-8) << i;
    EXPECT_NEAR(got[i].second, want[i].second, 1e-8) << i;
  }
  // A unitary change of basis keeps ‖p‖² = Σ (n + ½) = N²/2.
  EXPECT_NEAR(2 * at::real(at::vdot(nplr.P, nplr.P)).item<double>(), N * N / 2.0, 1e-10);
}

// K_l = Re(C Ā^l B̄) with Ā = (I − Δ/2 A)⁻¹(I + Δ/2 A), B̄ = (I − Δ/2 A)⁻¹ Δ B and C = C̃ (I − Ā^{L_k})⁻¹, from
// the mixer's tensors, by explicit inverses and L matrix-vector products.
at::Tensor dense_kernel(const nn::TokenMixer& mixer, int64_t L, int64_t l_max, int64_t channel = 0) {
  const at::Tensor dt = at::softplus(tensor_named(mixer, "inv_dt"));
  const at::Tensor Lambda =
      at::complex(-at::exp(tensor_named(mixer, "A_real")), -tensor_named(mixer, "A_imag"));
  const at::Tensor P = at::view_as_complex(tensor_named(mixer, "P").contiguous());
  const at::Tensor B = at::view_as_complex(tensor_named(mixer, "B").contiguous());
  const at::Tensor C = at::view_as_complex(tensor_named(mixer, "C").contiguous())[channel];
  const int64_t H = Lambda.size(0), n = 2 * Lambda.size(1);
  at::Tensor K = at::zeros({H, L}, at::kDouble);
  for (int64_t h = 0; h < H; ++h) {
    const double d = dt[h].item<double>();
    const at::Tensor A = dense_A(Lambda[h], P[h]), eye = at::eye(n, at::kComplexDouble);
    const at::Tensor inv = at::linalg_inv(eye - A * (d / 2));
    const at::Tensor dA = at::matmul(inv, eye + A * (d / 2));
    at::Tensor state = at::mv(inv, at::cat({B[h], at::conj(B[h])}).resolve_conj() * d);
    at::Tensor dA_L = eye;
    for (int64_t l = 0; l < l_max; ++l) dA_L = at::matmul(dA_L, dA);
    const at::Tensor c_tilde = at::cat({C[h], at::conj(C[h])}).resolve_conj();
    const at::Tensor c = at::mv(at::linalg_inv(eye - dA_L).transpose(0, 1), c_tilde);
    for (int64_t l = 0; l < L; ++l) {
      K[h][l] = at::real((c * state).sum()).item<double>();
      state = at::mv(dA, state);
    }
  }
  return K;
}

TEST(S4Test, CauchyWoodburyKernelEqualsTheDenseBilinearKernelInFloat64) {
  for (const int64_t l_max : {int64_t{64}, int64_t{255}, int64_t{256}}) {  // odd and even (the Nyquist node)
    const nn::ModelConfig config =
        mixer_config("s4", 4, 1, {{"d_state", 8}, {"l_max", l_max}, {"dt_min", 0.01}, {"dt_max", 0.2}});
    const auto mixer = build_mixer("s4", config);
    const S4& s4 = dynamic_cast<const S4&>(*mixer);
    const at::Tensor K = s4.kernel(l_max);
    const at::Tensor want = dense_kernel(*mixer, l_max, l_max);
    const double scale = want.abs().max().item<double>();
    EXPECT_LE(max_diff(K[0], want), 1e-10 * scale) << l_max;
    // A shorter sequence takes the first taps.
    EXPECT_LE(max_diff(s4.kernel(20)[0], want.narrow(1, 0, 20)), 1e-10 * scale) << l_max;
  }
}

TEST(S4Test, StepEqualsForwardAndPaddingLeavesTheStateAlone) {
  const nn::ModelConfig config = mixer_config("s4", 6, 1, {{"d_state", 6}, {"l_max", 16}});
  const auto mixer = build_mixer("s4", config);
  ASSERT_TRUE(mixer->has_decode_state());
  testing::expect_step_equals_forward_with_padding(*mixer, at::randn({2, 11, 6}, at::kDouble), 1, 3, 1e-10);
}

TEST(S4Test, SsmParametersHaveTheirOwnLearningRateAndNoWeightDecay) {
  const auto mixer = build_mixer("s4", mixer_config("s4", 4, 1, {{"d_state", 4}, {"l_max", 8}}));
  std::set<std::string> names;
  for (const nn::ParamGroup& g : mixer->param_groups()) {
    names.insert(g.tensor.substr(g.tensor.rfind('.') + 1));
    EXPECT_EQ(g.lr.value_or(-1), 0.001);
    EXPECT_EQ(g.weight_decay.value_or(-1), 0.0);
  }
  EXPECT_EQ(names, (std::set<std::string>{"inv_dt", "A_real", "A_imag", "P", "B"}));
}

TEST(S4Test, BadInputIsRefusedNamingTheOption) {
  const auto mixer = build_mixer("s4", mixer_config("s4", 4, 1, {{"d_state", 4}, {"l_max", 8}}));
  try {
    (void)mixer->forward(at::randn({1, 9, 4}, at::kDouble), {});
    FAIL() << "a sequence longer than l_max was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("l_max = 8"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)build_mixer("s4", mixer_config("s4", 4, 1, {{"d_state", 7}})), InvalidArgument);
  try {
    (void)build_mixer("s4", mixer_config("s4", 4, 1, {{"bidirectional", true}}));
    FAIL() << "a bidirectional s4 was accepted in a causal LM";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("bidirectional = true"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lowrank::mix
