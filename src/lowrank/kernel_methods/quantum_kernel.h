// Quantum-kernel SVM with a statevector simulator — Havlíček, Córcoles, Temme, Harrow, Kandala,
// Chow & Gambetta, 2019, "Supervised learning with quantum-enhanced feature spaces", Nature 567,
// 209–212, arXiv:1804.11326 (the "quantum kernel estimation" protocol).
//
// Feature map on n qubits (eq. 2 of the paper's Methods, with S ranging over single qubits and pairs):
//   |Φ(x)⟩ = U_Φ(x) H^{⊗n} U_Φ(x) H^{⊗n} |0⟩^n,   U_Φ(x) = exp(i Σ_S φ_S(x) Π_{k∈S} Z_k),
//   φ_{k}(x) = x_k,   φ_{k,l}(x) = (π − x_k)(π − x_l)   (k < l, all pairs).
// α convention: the phase is e^{+iφ} with no factor 2, as in the authors' ad hoc dataset code
// (qiskit-community/qiskit-machine-learning, qiskit_machine_learning/datasets/ad_hoc.py); Qiskit's
// ZZFeatureMap builds P(2φ) = e^{iφ}e^{−iφZ} gates instead: the opposite sign up to a global phase, so
// its statevector is the complex conjugate of ours and the kernel is the same (quantum_kernel_test).
// U_Φ is diagonal: on basis state b with z_k = 1 − 2b_k (qubit k = bit k) its entry is
// exp(i[Σ_k x_k z_k + Σ_{k<l} φ_{kl} z_k z_l]). So |Φ(x)⟩ = D(x) · H_N/√N · D(x) · 1/√N, computed by one
// fast Walsh–Hadamard transform (linalg/fwht.h) per point: O(n 2ⁿ) instead of dense 2ⁿ×2ⁿ gates.
// Kernel: k(x, x') = |⟨Φ(x)|Φ(x')⟩|², the probability of the all-zeros outcome of
// U†(x')U(x)|0⟩; with shots R the hardware estimate is Binomial(R, k)/R (shot noise, seeded).
// Classifier: C-SVM on the precomputed Gram (kernel_methods/svm.h).
// Ad hoc dataset (the paper's Fig. 3 / ad_hoc.py): x ~ U[0, 2π)ⁿ, V a random unitary (eigenvectors of
// a random Hermitian matrix), label sign ⟨Φ(x)|V† Z^{⊗n} V|Φ(x)⟩ (the parity Π_k z_k, which is
// Z₁Z₂ for n = 2), kept only where |value| > Δ.
// Memory: 2ⁿ complex doubles (16·2ⁿ bytes) per point; n ≤ 20 (16 MiB per state).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

inline constexpr int64_t kMaxQubits = 20;

// The statevectors |Φ(x)⟩ for x [m, n]: complex128 [m, 2ⁿ].
at::Tensor quantum_feature_states(const at::Tensor& x);

// K_ij = |⟨Φ(x_i)|Φ(y_j)⟩|² [m, p]. shots > 0 replaces each entry by Binomial(shots, K_ij)/shots.
at::Tensor quantum_gram(const at::Tensor& x, const at::Tensor& y, int64_t shots = 0, uint64_t seed = 0);

struct AdHocDataset {
  at::Tensor x;       // [2·per_class, n] in [0, 2π)
  at::Tensor labels;  // [2·per_class] ±1, alternating classes
};
// per_class points of each label, with the gap Δ (0.3 in the paper's code).
AdHocDataset ad_hoc_dataset(int64_t qubits, int64_t per_class, double gap, uint64_t seed);

}  // namespace lowrank::kernel_methods
