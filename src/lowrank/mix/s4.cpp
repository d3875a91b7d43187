// S4, the DPLR structured state space layer; see s4.h.
#include "lowrank/mix/s4.h"

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/mix/mixer_options.h"
#include "lowrank/mix/s4d.h"
#include "lowrank/nn/config.h"
#include "lowrank/ops/cauchy.h"

namespace lowrank::mix {

namespace {

const OptionHelp& s4_option_help() {
  static const OptionHelp help = [] {
    OptionHelp h = ssm_option_help("inv_dt, A_real, A_imag, P and B");
    h.insert(h.begin() + 1, {"l_max",
                             "kernel length C-tilde is set for; longer sequences are refused (default "
                             "max_position_embeddings)"});
    return h;
  }();
  return help;
}

struct S4State final : nn::MixerState {
  int64_t batch = 0;
  at::Tensor h;           // [B, H, 2M] complex; undefined until the first step
  at::Tensor dA, dB, dC;  // [H, 2M, 2M], [H, 2M], [H, 2M]: the dense recurrence, set at the first step
};

// The conjugate-extended vector [x, x̄] along the last axis.
at::Tensor conj_extend(const at::Tensor& x) {
  return at::cat({x, at::conj(x)}, -1).resolve_conj();
}

// Ā^L of dA [H, n, n].
at::Tensor power(const at::Tensor& dA, int64_t L) {
  return at::linalg_matrix_power(dA, L);
}

}  // namespace

LegsNplr legs_nplr(int64_t N) {
  LR_CHECK(N >= 2 && N % 2 == 0, InvalidArgument, "legs_nplr: N must be even and >= 2, got ", N);
  at::Tensor A = at::zeros({N, N}, at::kDouble);
  auto a = A.accessor<double, 2>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k <= n; ++k)
      a[n][k] =
          n == k ? -static_cast<double>(n + 1) : -std::sqrt(static_cast<double>((2 * n + 1) * (2 * k + 1)));
  const at::Tensor q = at::arange(N, at::kDouble);
  const at::Tensor B = at::sqrt(2 * q + 1);
  const at::Tensor P = at::sqrt(q + 0.5);
  // A + P Pᵀ = −½ I + S with S skew-symmetric: its eigenvalues are −½ + i·eig(−iS), −iS Hermitian.
  const at::Tensor AP = A + at::outer(P, P);
  const double re = AP.diagonal().mean().item<double>();
  const at::Tensor S = AP - re * at::eye(N, at::kDouble);
  const at::Tensor hermitian = S.to(at::kComplexDouble) * c10::complex<double>(0, -1);
  auto [w_im, V] = at::linalg_eigh(hermitian);  // ascending
  const int64_t M = N / 2;
  // Keep the half with negative imaginary part (the conjugates are implied).
  V = V.narrow(1, 0, M);
  const at::Tensor Vh = V.conj().transpose(0, 1).resolve_conj();  // [M, N]
  LegsNplr out;
  out.Lambda = at::complex(at::full({M}, re, at::kDouble), w_im.narrow(0, 0, M).contiguous());
  out.P = at::matmul(Vh, P.to(at::kComplexDouble));
  const at::Tensor b = at::matmul(Vh, B.to(at::kComplexDouble));
  out.B = at::complex(at::real(b).contiguous(), at::clamp(at::imag(b), -2.0, 2.0).contiguous());  // B_clip 2
  return out;
}

S4Dense s4_dense(const at::Tensor& dt, const at::Tensor& Lambda, const at::Tensor& P, const at::Tensor& B) {
  const int64_t H = Lambda.size(0), n = 2 * Lambda.size(1);
  const at::Tensor Pf = conj_extend(P);
  const at::Tensor A = at::diag_embed(conj_extend(Lambda)) - Pf.unsqueeze(-1) * at::conj(Pf).unsqueeze(-2);
  const at::Tensor eye = at::eye(n, A.options());
  const at::Tensor half = (dt / 2).to(A.scalar_type()).view({H, 1, 1});
  const at::Tensor lhs = eye - half * A;
  S4Dense out;
  out.dA = at::linalg_solve(lhs, eye + half * A);
  out.dB =
      at::linalg_solve(lhs, (dt.to(A.scalar_type()).view({H, 1}) * conj_extend(B)).unsqueeze(-1)).squeeze(-1);
  return out;
}

S4Options s4_options(const nn::MixerSpec& spec) {
  const Json& o = spec.options;
  check_option_keys("s4", o, s4_option_help());
  S4Options out;
  out.common = ssm_options(spec, "s4");
  out.l_max = json_get_or<int64_t>(o, "l_max", spec.config.max_position_embeddings, "mixer s4");
  LR_CHECK(out.l_max >= 1, InvalidArgument, "mixer s4: l_max must be >= 1, got ", out.l_max,
           o.contains("l_max") ? "" : " (from max_position_embeddings)");
  return out;
}

S4::S4(const nn::MixerSpec& spec) : S4(spec, s4_options(spec)) {}

S4::S4(const nn::MixerSpec& spec, const S4Options& options)
    : SsmConvLayer(spec, options.common), options_(options) {
  const int64_t H = hidden_, M = common_.d_state / 2, channels = common_.bidirectional ? 2 : 1;
  const LegsNplr legs = legs_nplr(common_.d_state);
  const at::Tensor Lambda = legs.Lambda.unsqueeze(0).expand({H, M}).contiguous();
  const at::Tensor P = legs.P.unsqueeze(0).expand({H, M}).contiguous();
  const at::Tensor B = legs.B.unsqueeze(0).expand({H, M}).contiguous();
  const at::Tensor dt = at::exp(ssm_log_dt(prefix_ + ".inv_dt", H, common_.dt_min, common_.dt_max));
  // C ~ CN(0, 1), stored as C̃ = C (I − Ā^L): row vectors, C̃ᵀ = Cᵀ − Cᵀ Ā^L.
  const at::Tensor C = at::view_as_complex(ssm_complex_normal(prefix_ + ".C", {channels, H, M}));
  const at::Tensor Cf = conj_extend(C);  // [c, H, 2M]
  const at::Tensor dA_L = power(s4_dense(dt, Lambda, P, B).dA, options_.l_max);
  const at::Tensor C_tilde = (Cf - at::matmul(Cf.unsqueeze(-2), dA_L).squeeze(-2)).narrow(-1, 0, M);

  auto make = [&](const std::string& leaf, const at::Tensor& value) {
    return make_tensor(spec, leaf, value);
  };
  inv_dt_ = make("inv_dt", at::log(at::expm1(dt)));  // softplus⁻¹
  A_real_ = make("A_real", at::log(-at::real(Lambda)));
  A_imag_ = make("A_imag", -at::imag(Lambda));
  P_ = make("P", at::view_as_real(P));
  B_ = make("B", at::view_as_real(B));
  C_ = make("C", at::view_as_real(C_tilde.contiguous()));
}

nn::NamedTensors S4::tensors() const {
  return {{prefix_ + ".inv_dt", inv_dt_},
          {prefix_ + ".A_real", A_real_},
          {prefix_ + ".A_imag", A_imag_},
          {prefix_ + ".P", P_},
          {prefix_ + ".B", B_},
          {prefix_ + ".C", C_},
          {prefix_ + ".D", D_}};
}

std::vector<nn::ParamGroup> S4::param_groups() const {
  return ssm_groups({"inv_dt", "A_real", "A_imag", "P", "B"});
}

S4::Params S4::params() const {
  const at::ScalarType real = ssm_real_type(C_.scalar_type());
  auto complex = [real](const at::Tensor& t) { return at::view_as_complex(t.to(real).contiguous()); };
  Params p;
  p.dt = at::softplus(inv_dt_.to(real));
  p.Lambda = at::complex(-at::exp(A_real_.to(real)), -A_imag_.to(real));
  p.P = complex(P_);
  p.B = complex(B_);
  p.C = complex(C_);
  return p;
}

at::Tensor S4::kernel(int64_t L) const {
  const int64_t Lk = options_.l_max;
  LR_CHECK(L >= 1 && L <= Lk, InvalidArgument, "mixer s4: the sequence has ", L,
           " positions, more than l_max = ", Lk, " (the length C-tilde is set for; raise option l_max)");
  const Params p = params();
  const int64_t H = hidden_, M = common_.d_state / 2, c = p.C.size(0);
  const at::ScalarType ct = p.Lambda.scalar_type();
  const at::Tensor dt = p.dt.view({1, 1, H, 1});
  const at::Tensor w = p.Lambda * p.dt.unsqueeze(-1);  // ΔΛ [H, M]
  // Rows (B, P) × columns (C̃..., Q): the four resolvents of the Woodbury identity, one Cauchy call.
  const at::Tensor rows = at::stack({p.B, p.P});                       // [2, H, M]
  const at::Tensor cols = at::cat({p.C, at::conj(p.P).unsqueeze(0)});  // [c + 1, H, M]
  const at::Tensor v = rows.unsqueeze(1) * cols.unsqueeze(0) * dt;     // [2, c + 1, H, M]
  // The roots of unity ω_k = exp(−2πik/L_k), k ≤ L_k/2 (rfft's half), and z = 2(1 − ω)/(1 + ω).
  const at::Tensor angle =
      at::arange(Lk / 2 + 1, at::kDouble) * (-2 * std::numbers::pi / static_cast<double>(Lk));
  const at::Tensor omega = at::polar(at::ones_like(angle), angle).to(ct);
  const at::Tensor z = 2 * (1 - omega) / (1 + omega);
  const int64_t Lz = z.size(0);
  const at::Tensor r =
      ops::cauchy(v.reshape({-1, M}), z, w.unsqueeze(0).expand({2 * (c + 1), H, M}).reshape({-1, M}))
          .view({2, c + 1, H, Lz});
  const at::Tensor r_cb = r[0].narrow(0, 0, c), r_qb = r[0].narrow(0, c, 1);
  const at::Tensor r_cp = r[1].narrow(0, 0, c), r_qp = r[1].narrow(0, c, 1);
  const at::Tensor k_f = (r_cb - r_qb * r_cp / (1 + r_qp)) * (2 / (1 + omega));
  return at::fft_irfft(k_f, Lk, -1).narrow(-1, 0, L);
}

std::unique_ptr<nn::MixerState> S4::new_state(int64_t batch) const {
  check_decodes();
  auto state = std::make_unique<S4State>();
  state->batch = batch;
  return state;
}

at::Tensor S4::step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const {
  auto& s = dynamic_cast<S4State&>(state);
  check_step(x, s.batch);
  if (!s.h.defined()) {
    // C = C̃ (I − Ā^L)⁻¹: (I − Ā^L)ᵀ Cᵀ = C̃ᵀ.
    const Params p = params();
    const S4Dense dense = s4_dense(p.dt, p.Lambda, p.P, p.B);
    const at::Tensor eye = at::eye(dense.dA.size(-1), dense.dA.options());
    const at::Tensor lhs = (eye - power(dense.dA, options_.l_max)).transpose(-1, -2);
    s.dA = dense.dA;
    s.dB = dense.dB;
    s.dC = at::linalg_solve(lhs, conj_extend(p.C[0]).unsqueeze(-1)).squeeze(-1);
    s.h = at::zeros({s.batch, hidden_, dense.dA.size(-1)}, dense.dA.options());
  }
  const at::Tensor u = x.select(1, 0).to(s.dB.scalar_type());  // [B, H]
  at::Tensor h = at::matmul(s.dA, s.h.unsqueeze(-1)).squeeze(-1) + s.dB * u.unsqueeze(-1);
  if (context.valid.defined()) {
    const at::Tensor keep = context.valid.select(1, 0).to(at::kBool).view({s.batch, 1, 1});
    h = at::where(keep, h, s.h);
  }
  s.h = h;
  const at::Tensor y = at::real((h * s.dC).sum(-1));  // [B, H]
  return output(y.unsqueeze(1), x, context.routing);
}

void register_s4(nn::MixerRegistry& registry) {
  registry.add(
      {"s4",
       "S4: DPLR state space layer (HiPPO-LegS, A = Lambda - PP*), kernel by Cauchy at the roots of unity + "
       "Woodbury + bilinear correction + iFFT, FFT convolution, GELU, GLU output; dense recurrent "
       "decode; causal unless bidirectional",
       "Gu et al., 2022, arXiv:2111.00396", s4_option_help()},
      [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
        return std::make_unique<S4>(spec);
      });
}

}  // namespace lowrank::mix
