// Differentially private similarity sums — Backurs, Lin, Mahabadi, Silwal & Tarnawski, 2024,
// "Efficiently Computing Similarities to Private Datasets" (ICLR 2024), arXiv:2403.08917.
//
// A private dataset X ⊂ R^d is turned once into an ε-DP structure from which Σ_{x∈X} f(x, y) can be
// estimated for any number of queries y without further privacy cost (post-processing).
// Neighbouring datasets differ by one added or removed point.
//
// ℓ1 distance (the paper's one-dimensional decomposition): Σ_x ‖x − y‖₁ = Σ_j Σ_x |x_j − y_j|, so
// each coordinate j is a 1-D problem. Values are clipped to the box [lower, lower + R] and shifted,
// x' = clip(x) − lower ∈ [0, R]; [0, R] is cut into 2^L bins and a dyadic tree over the bins (levels
// ℓ = 0..L, level ℓ holds 2^ℓ nodes, node i of level ℓ covers bins [i·2^{L−ℓ}, (i+1)·2^{L−ℓ}))
// stores in every node the count C and the sum S of the x'_j falling into it. For a query with bin
// b = ⌊y'_j 2^L/R⌋ (b = 2^L above the box, 0 below), C_< and S_< over the bins [0, b) are sums of at
// most L nodes (one per set bit of b; the root when b = 2^L), and
//   Σ_x |x'_j − y'_j| = y'_j (2 C_< − n) − 2 S_< + S_tot,
// exact whenever no point shares y's bin (in particular for y on a bin edge); a point in y's bin
// is counted on the ≥ side, an error ≤ 2·bin width for each such point. n and S_tot are the root.
// Privacy: one point enters exactly one node per level and coordinate, d(L+1) count nodes (ℓ1
// sensitivity d(L+1)) and d(L+1) sum nodes (sensitivity R·d(L+1)); the counts get Laplace noise
// Lap(d(L+1)/ε₁), the sums Lap(R d(L+1)/ε₂), with ε₁ = f·ε, ε₂ = (1 − f)·ε, f = count_fraction
// (default ½: our choice; the paper leaves the split to the analysis). The additive error of the
// query is O(R d^{1.5} L^{1.5}/ε) (d independent coordinates each with noise ∝ d), independent
// of n, and the query costs O(dL) whatever n (the paper's Theorem for ℓ1, up to its (1 + α) factor).
//
// ℓ2 distance: ‖z‖₂ = √(π/2)·E_g|gᵀz| for g ~ N(0, I_d), so with k Gaussian projections g_1..g_k
// (drawn from the seed, data-independent) Σ_x ‖x − y‖₂ ≈ √(π/2)/k · Σ_i Σ_x |g_iᵀ(x − y)|: the ℓ1
// structure built on the k projected coordinates g_iᵀ(x − c) (c the box centre), clipped to
// [−s, s] (s = projection_radius, default 1.5·R·√d, three standard deviations of gᵀ(x − c) for x in
// the box), with d replaced by k in the noise scales.
//
// Gaussian kernel exp(−‖x − y‖²/(2σ²)): the paper reduces the dimension and then builds a DP kernel
// sketch; here (deviation, a stand-in whose equivalence to the paper's sketch is not shown) a JL
// map P [k, d] with N(0, 1/k) entries when k < d, then m random Fourier features
// φ(x) = √(2/m) cos(W P x + b) (linalg::fourier_features, ‖φ‖₂ ≤ √2) and the released sum
// Σ_x φ(x) + N(0, s² I_m), s from the analytic Gaussian mechanism (Balle & Wang, 2018, ICML,
// Theorem 8) for sensitivity √2 at (ε₂, δ), plus the count n + Lap(1/ε₁). The query is ⟨S̃, φ(y)⟩.
//
// Classification (the paper's DP classification by average similarity): one structure per class;
// the classes are disjoint, so by parallel composition each gets the full ε. The prediction is
// argmin_c of the mean distance (1/ñ_c) Σ_{x∈X_c} ‖x − y‖ (l1, l2) or argmax_c of the kernel mean
// (gaussian), ñ_c the structure's noisy count clamped to ≥ 1 (post-processing). The label set is
// taken as public (option "classes", or 0..max label of the data).
//
// Deviations, by name: the ε split f = ½ (option count_fraction); clipping ranges given as
// options (lower, radius, projection_radius), never read from the data; the Gaussian-kernel
// structure is JL + Gaussian-mechanism RFF (above); ε = "inf" builds the exact, non-private
// structure (for comparison only).
//
// Not hardened: the Laplace and Gaussian noise are drawn in floating point (ATen's exponential and
// normal samplers); Mironov (2012, "On Significance of the Least Significant Bits for Differential
// Privacy", CCS) shows that the set of reachable floating-point outputs can leak the input. A
// deployment needs a snapping or discrete mechanism; this implementation is for experiments.
//
// Reference code: none from the authors was found (searched GitHub for the title, the authors and
// "DP distance query dyadic tree"); prior DP-KDE sketches (e.g. brc7/PrivateRACE) are different
// methods and were not used.
//
// Registered as `dp_similarity`. The saved model holds only the noisy aggregates and the
// data-independent random projections/features; asking to keep the raw data (option keep_data) is
// refused.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/kernel_methods/estimator.h"

namespace lowrank::kernel_methods {

struct DpOptions {
  double epsilon = 1;            // > 0; +inf builds the exact (non-private) structure
  std::string metric = "l1";     // l1 | l2 | gaussian
  int64_t levels = 10;           // L: 2^L bins per tree coordinate
  double lower = 0, radius = 1;  // the data box [lower, lower + R]^d
  double count_fraction = 0.5;   // ε₁ = f ε on the counts, ε₂ = (1 − f) ε on the sums
  int64_t projections = 64;      // l2: Gaussian projections k; gaussian: JL dimension (used if k < d)
  double projection_radius = 0;  // l2: clip range [−s, s] of the projections; 0: 1.5 R √d
  double bandwidth = 1;          // gaussian: σ
  int64_t features = 512;        // gaussian: random Fourier features m
  double delta = 1e-5;           // gaussian: δ of the Gaussian mechanism
};

// Reads the estimator's options (the MethodInfo keys); throws InvalidArgument naming the key.
DpOptions dp_options_from_json(const Json& options);
// Checks ranges (ε > 0 or +inf, not NaN; levels 1..24; R > 0; f in (0, 1); ...).
void validate(const DpOptions& options);

// The per-coordinate dyadic trees of noisy counts and sums (ℓ1).
struct DyadicSums {
  at::Tensor counts;  // [d, 2^{L+1} − 1] fp64; level ℓ's nodes at offset 2^ℓ − 1
  at::Tensor sums;    // [d, 2^{L+1} − 1] sums of clip(x) − lower
  int64_t levels = 0;
  double lower = 0, radius = 1;
};

// Builds the trees of x [n, d] (n may be 0) with Laplace noise of scales count_scale and
// sum_scale on every node (0: no noise).
DyadicSums dyadic_build(const at::Tensor& x, int64_t levels, double lower, double radius, double count_scale,
                        double sum_scale, at::Generator& generator);
// Estimates of Σ_x |clip(x_j) − y_j| summed over j, for queries y [m, d]: [m].
at::Tensor dyadic_distance_sums(const DyadicSums& trees, const at::Tensor& y);
// The noisy number of points: the mean of the d root counts.
double dyadic_count(const DyadicSums& trees);

// Laplace scales of the ℓ1 structure on `dims` tree coordinates: {d(L+1)/ε₁, R d(L+1)/ε₂}
// (0 at ε = +inf).
std::pair<double, double> laplace_scales(const DpOptions& options, int64_t dims, double radius);
// σ of the analytic Gaussian mechanism for ℓ2 sensitivity Δ at (ε, δ) (Balle & Wang 2018, Thm 8):
// the smallest σ with Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ) ≤ δ (bisection to 1e-12 relative).
double gaussian_mechanism_sigma(double sensitivity, double epsilon, double delta);

// One ε-DP structure of a dataset for the chosen metric.
struct DpStructure {
  std::string metric;
  DyadicSums trees;        // l1, l2
  at::Tensor projections;  // l2: G [k, d]; gaussian: the JL map P [k, d] (undefined: none)
  at::Tensor centre;       // l2: the box centre c [d]
  at::Tensor frequencies;  // gaussian: W [m, k or d] ~ N(0, 1/σ²)
  at::Tensor phases;       // gaussian: b [m]
  at::Tensor feature_sum;  // gaussian: Σ φ(x) + N(0, s² I) [m]
  double count = 0;        // gaussian: n + Lap(1/ε₁)
};

// The structure of x [n, d]; the random projections/features and the noise come from `generator`.
DpStructure dp_build(const at::Tensor& x, const DpOptions& options, at::Generator& generator);
// Estimates of Σ_x ‖x − y‖₁ (l1), Σ_x ‖x − y‖₂ (l2) or Σ_x exp(−‖x − y‖²/2σ²) (gaussian) for y [m, d].
at::Tensor dp_similarity_sums(const DpStructure& structure, const at::Tensor& y);
// The structure's noisy count (not clamped).
double dp_count(const DpStructure& structure);

// Fits the registered `dp_similarity` classifier (create_estimator + fit). Like every dp_similarity
// model, it records no SHA-256 of its data: a hash of the data is not a noisy aggregate.
std::unique_ptr<Estimator> dp_fit(const Dataset& data, const Json& options, uint64_t seed);
// Per-class scores of a fitted dp_similarity model for x [m, d]: [m, C] mean distances (l1, l2) or
// kernel means (gaussian); `classes` receives the class labels [C].
at::Tensor dp_class_scores(const Estimator& model, const at::Tensor& x, at::Tensor* classes = nullptr);

}  // namespace lowrank::kernel_methods
