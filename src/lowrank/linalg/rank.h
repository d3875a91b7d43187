// Rank-selection rules on a spectrum of singular values s_1 >= s_2 >= ... >= s_n >= 0.
//
// - energy fraction: the smallest k with sum_{i<=k} s_i^2 >= f * sum_i s_i^2.
// - effective rank (Roy & Vetterli, 2007, "The effective rank: a measure of effective
//   dimensionality", EUSIPCO): exp(H(p)) with p_i = s_i / sum_j s_j and H the Shannon entropy.
// - WeLore (Jaiswal et al., 2024, arXiv:2407.11239, utils.py::adaptive_rank_pruning): min-max
//   normalise the spectrum, s~_i = (s_i - s_min) / (s_max - s_min), and drop the ranks with
//   s~_i < tau; the kept rank is n - #{i : s~_i < tau}. The paper's global tau for a 50% rank
//   reduction of LLaMA-2 7B is 0.175 (kWeLoreDefaultTau). A flat spectrum (s_max == s_min)
//   normalises to 0/0 = NaN there (utils.py lines 131-132: `_data = (data-min(data))/(max(data)-
//   min(data))`, then `sum(_data < args.rank_thresold)`); NaN < tau is false, so no rank is dropped
//   and the matrix stays dense. welore_rank does the same: a flat spectrum keeps all n ranks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <ATen/ATen.h>

namespace lowrank::linalg {

inline constexpr double kWeLoreDefaultTau = 0.175;

// `s` is a 1-D tensor of singular values in descending order (as linalg_svdvals returns).
// All rules return a rank in [0, n] (0 only for an all-zero spectrum where noted).
int64_t energy_rank(const at::Tensor& s, double fraction);                 // fraction in (0, 1]
double effective_rank(const at::Tensor& s);                                // in [1, n]; 0 for s == 0
int64_t welore_rank(const at::Tensor& s, double tau = kWeLoreDefaultTau);  // tau in [0, 1]
// Min-max normalised spectrum (s - s_min) / (s_max - s_min); all NaN when s_max == s_min (the 0/0
// of the reference code, which no threshold test passes).
at::Tensor normalized_spectrum(const at::Tensor& s);

// A rule as users write it: "fixed:64", "energy:0.9", "effective", "welore:0.175".
struct RankRule {
  enum class Kind { kFixed, kEnergy, kEffective, kWeLore };
  Kind kind = Kind::kFixed;
  double value = 0;  // rank for kFixed, fraction for kEnergy, tau for kWeLore

  // Throws InvalidArgument naming the text.
  static RankRule parse(std::string_view text);
  std::string to_string() const;
  // The rank for spectrum `s`, clamped to [1, n] for a nonzero spectrum.
  int64_t select(const at::Tensor& s) const;
};

}  // namespace lowrank::linalg
