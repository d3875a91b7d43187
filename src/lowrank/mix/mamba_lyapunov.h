// Lyapunov exponents of Mamba's recurrence (Halloran, Gulati & Roysdon, 2025, "Mamba State-Space
// Models Are Lyapunov-Stable Learners", TMLR, arXiv:2406.00209, §3: the stability of Mamba's
// recurrent dynamics under small input changes, the argument for its robustness to mixed
// precision and PEFT).
//
// Closed form, per layer. The selective scan (ops/selective_scan.h) is
//   h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t,   Δ_t = softplus(dt_proj(δ_t)),  A = −exp(A_log),
// and Δ, B, C are functions of the layer's input, not of h, so the Jacobian of the map
// h_{t−1} ↦ h_t is diagonal: ∂h_t[d,n] / ∂h_{t−1}[d′,n′] = [d = d′, n = n′] · exp(Δ_t[d] A[d,n]).
// A perturbation δh₀ therefore evolves as δh_T[d,n] = exp(A[d,n] Σ_t Δ_t[d]) δh₀[d,n], and the
// exponents (1/T) ln |δh_T / δh₀| of the recurrence are
//   λ[d,n] = A[d,n] · mean_t Δ_t[d]  < 0                (softplus > 0, A < 0),
// one per (channel, state) pair. Here the mean runs over every position of every analysed
// sequence; the largest exponent of any single sequence is reported beside it.
//
// Whole-model estimate, in float64. The first Mamba layer's mixer input gets ε times a random
// unit vector at each of the first P positions; the clean and the perturbed sequences run
// through the whole model, and each Mamba layer's recurrence is replayed from its recorded input
// (clean and perturbed) to give its states at every position. ‖δh_t‖ is the distance between
// the two trajectories over every state of every layer. The estimate is the least-squares slope
// of mean_s ln(‖δh_t‖/ε) over t, from the first position the perturbation reaches only through
// the recurrence (P + conv_kernel − 1) to the first position where it falls to 1e-13 ‖h_t‖
// (float64 rounding is ~1e-16 ‖h_t‖): the maximal Lyapunov exponent,
// lim (1/t) ln ‖δh(t)‖/‖δh(0)‖, read off a finite sequence. As t grows the slowest mode
// dominates, so the slope approaches the largest closed-form exponent of the layers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/mix/mamba.h"
#include "lowrank/nn/model.h"

namespace lowrank::mix {

struct LyapunovOptions {
  double epsilon = 1e-6;            // size of the whole-model input perturbation
  int64_t perturbed_positions = 1;  // P: how many leading positions are perturbed
  uint64_t seed = 0;                // the perturbation's directions
};

struct LayerExponents {
  int64_t layer = 0;
  at::Tensor exponents;  // [inner, N] float64: λ[d,n] = A[d,n] · mean Δ[d]
  double max = 0, mean = 0, min = 0;
  double max_single_sequence = 0;  // the largest λ with Δ averaged over one sequence only
  double mean_delta = 0;           // mean Δ over channels and positions
};

struct PerturbationGrowth {
  std::vector<double> log_growth;      // mean over sequences of ln(‖δh_t‖ / ε), one per position
  int64_t fit_begin = 0, fit_end = 0;  // the positions of the fit, [begin, end)
  double exponent = 0;                 // the fitted slope (nats per position)
};

struct LyapunovReport {
  std::vector<LayerExponents> layers;  // the Mamba layers, in order
  PerturbationGrowth whole_model;
  int64_t sequences = 0, positions = 0;
  double epsilon = 0;
  int64_t perturbed_positions = 0;
  bool all_negative = false;  // every exponent of every layer < 0
};

// λ of one Mamba mixer for its input x [S, T, hidden] (the closed form above).
LayerExponents layer_exponents(const Mamba& mixer, const at::Tensor& x);

// The closed form for every Mamba layer and the whole-model estimate, on `tokens` [S, T] (int64).
// The model must be float64 (the estimate measures perturbations of 1e-6 and below). Throws
// InvalidArgument for a model without Mamba layers, another dtype, or too few positions for a fit.
LyapunovReport mamba_lyapunov(nn::Model& model, const at::Tensor& tokens,
                              const LyapunovOptions& options = {});

// The report as JSON (per-layer exponents in full) and as an SVG page: each layer's exponents
// (min, quartiles, max) and the whole-model growth curve with its fitted line.
OrderedJson lyapunov_json(const LyapunovReport& report);
std::string lyapunov_svg(const LyapunovReport& report, const std::string& title);
// Writes lyapunov.json and lyapunov.svg into `out_dir` (created if needed), each atomically.
void write_lyapunov_report(const std::filesystem::path& out_dir, const LyapunovReport& report,
                           const std::string& title);

}  // namespace lowrank::mix
