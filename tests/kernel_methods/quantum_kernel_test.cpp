// quantum_kernel: the FWHT statevectors against the dense circuit U_Φ H U_Φ H|0⟩ built with
// Kronecker products and a matrix exponential (SciPy, fixture), against Qiskit's ZZFeatureMap
// statevectors and qiskit-machine-learning's fidelity kernel (fixture), the SVM on the quantum Gram
// against scikit-learn's SVC(kernel="precomputed"), shot noise, and the ad hoc dataset end to end.
#include <gtest/gtest.h>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/quantum_kernel.h"
#include "lowrank/kernel_methods/svm.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

TEST(QuantumKernelTest, StatesAndGramMatchTheDenseCircuit) {
  const SafetensorsFile f = kernel_testing::fixture("quantum.safetensors");
  for (int n : {2, 3}) {
    const std::string s = std::to_string(n);
    const at::Tensor x = f.load("x" + s);
    const at::Tensor expected = at::complex(f.load("states" + s + "_re"), f.load("states" + s + "_im"));
    EXPECT_LE((quantum_feature_states(x) - expected).abs().max().item<double>(), 1e-12) << n << " qubits";
    const at::Tensor k = quantum_gram(x, x);
    EXPECT_LE(testing::max_abs_diff(k, f.load("gram" + s)), 1e-12) << n << " qubits";
    EXPECT_LE(testing::max_abs_diff(k.diagonal(), at::ones({8}, at::kDouble)), 1e-12);
  }
}

// Qiskit's ZZFeatureMap (reps 2, full entanglement, its default data map) simulated by
// qiskit.quantum_info.Statevector, and qiskit-machine-learning's FidelityStatevectorKernel on it
// (fixture: tests/fixtures/kernels/make_fx.py). ZZFeatureMap applies P(2φ) = e^{iφ}·e^{−iφZ}, so its
// state is U'H U'H|0⟩ with U' = exp(−iΣφ_S Z_S) up to a global phase; the paper's (and our) phase is
// e^{+iφ}. H and |0⟩ are real, so Qiskit's state is the complex conjugate of ours up to a global
// phase, and the Grams |⟨Φ(x)|Φ(x')⟩|² agree. Qubit k is bit k of the index in both.
TEST(QuantumKernelTest, StatesAreQiskitZzFeatureMapConjugatedUpToGlobalPhase) {
  const SafetensorsFile f = kernel_testing::fixture("qiskit.safetensors");
  for (int n : {2, 3, 4}) {
    const std::string s = std::to_string(n);
    const at::Tensor x = f.load("x" + s);
    const at::Tensor qiskit = at::complex(f.load("states" + s + "_re"), f.load("states" + s + "_im"));
    const at::Tensor conjugate = quantum_feature_states(x).conj().resolve_conj();
    // The global phase of each row: the overlap ⟨conj Φ|Ψ_qiskit⟩ divided by its modulus.
    const at::Tensor overlap = (conjugate.conj() * qiskit).sum(1, true);
    EXPECT_LE((overlap.abs() - 1).abs().max().item<double>(), 1e-10) << n << " qubits";
    const at::Tensor aligned = conjugate * (overlap / overlap.abs());
    EXPECT_LE((aligned - qiskit).abs().max().item<double>(), 1e-10) << n << " qubits";
    EXPECT_LE(testing::max_abs_diff(quantum_gram(x, x), f.load("gram" + s)), 1e-10) << n << " qubits";
  }
}

TEST(QuantumKernelTest, SvmOnTheQuantumGramMatchesScikitLearn) {
  const SafetensorsFile f = kernel_testing::fixture("quantum.safetensors");
  const at::Tensor train = f.load("train"), test = f.load("test"), labels = f.load("labels");
  const SvmSolution s = svm_fit(quantum_gram(train, train), labels, {1.0, 1e-12});
  EXPECT_LE(testing::max_abs_diff(svm_decision(s, quantum_gram(test, train)), f.load("svc_decision")), 1e-6);
}

TEST(QuantumKernelTest, ShotNoiseIsBinomial) {
  const at::Tensor x = kernel_testing::normal({6, 2}, 71);
  const at::Tensor exact = quantum_gram(x, x);
  const int64_t shots = 400;
  at::Tensor mean = at::zeros_like(exact);
  const int repeats = 200;
  for (int r = 0; r < repeats; ++r) mean += quantum_gram(x, x, shots, 1000 + r);
  mean /= repeats;
  // Mean of 200 × 400 Bernoulli(k) draws: standard error √(k(1−k)/80000) ≤ 0.0018.
  const at::Tensor se = (exact * (1 - exact) / (shots * repeats)).sqrt();
  EXPECT_TRUE(((mean - exact).abs() <= 4 * se + 1e-12).all().item<bool>()) << mean - exact;
  kernel_testing::expect_error([&] { quantum_gram(x, x, -1); }, "shots must be >= 0");
  kernel_testing::expect_error(
      [] {
        quantum_feature_states(at::zeros({1, 21}, at::kDouble));
      },
      "21 qubits; at most 20");
}

TEST(QuantumKernelTest, SeparatesTheAdHocDataset) {
  // The labels are linear in |Φ⟩⟨Φ|, so the quantum-kernel SVM separates them (the paper: 100%).
  // One draw (one random unitary V): 30 points per class, the first 40 (20 per class, the classes
  // alternate) to train, the last 20 to test.
  const AdHocDataset all = ad_hoc_dataset(2, 30, 0.3, 5);
  const Dataset fit_data = make_dataset(all.x.slice(0, 0, 40), all.labels.slice(0, 0, 40), "ad hoc train");
  auto model = create_estimator("quantum_kernel", {{"c", 10.0}}, 0);
  model->fit(fit_data);
  const at::Tensor predicted = model->predict(all.x.slice(0, 40));
  const double accuracy = predicted.eq(all.labels.slice(0, 40)).to(at::kDouble).mean().item<double>();
  EXPECT_GE(accuracy, 0.95);
  testing::TempDir dir;
  model->save(dir / "q");
  EXPECT_TRUE(load_estimator(dir / "q")->predict(all.x.slice(0, 40)).equal(predicted));
  EXPECT_EQ(all.labels.sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace lowrank::kernel_methods
