#include "lowrank/kernel_methods/quantum_kernel.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/methods.h"
#include "lowrank/kernel_methods/svm.h"
#include "lowrank/linalg/fwht.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "quantum_kernel";
constexpr double kPi = std::numbers::pi;

void check_qubits(int64_t n) {
  LR_CHECK(n >= 1 && n <= kMaxQubits, InvalidArgument, "quantum kernel: ", n, " qubits; at most ", kMaxQubits,
           " are simulated (a state of n qubits takes 16·2ⁿ bytes: 16 MiB at n = 20)");
}

// z [2ⁿ, n]: z_k = 1 − 2 b_k for each basis state.
at::Tensor spins(int64_t n) {
  const at::Tensor index = at::arange(int64_t{1} << n, at::kLong).unsqueeze(1);
  const at::Tensor bits = index.bitwise_right_shift(at::arange(n, at::kLong)).bitwise_and(1);
  return 1.0 - 2.0 * bits.to(at::kDouble);
}

// The diagonal phase angles of U_Φ(x) for x [m, n]: [m, 2ⁿ].
at::Tensor phase_angles(const at::Tensor& x, const at::Tensor& z) {
  const int64_t n = x.size(1);
  at::Tensor angles = at::matmul(x, z.t());  // Σ_k x_k z_k
  const at::Tensor shifted = kPi - x;
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t l = k + 1; l < n; ++l) {
      angles = angles + (shifted.select(1, k) * shifted.select(1, l)).unsqueeze(1) *
                            (z.select(1, k) * z.select(1, l)).unsqueeze(0);
    }
  }
  return angles;
}

}  // namespace

at::Tensor quantum_feature_states(const at::Tensor& x) {
  LR_CHECK(x.dim() == 2, InvalidArgument, "quantum kernel: inputs must be [m, n], got ", x.sizes());
  const int64_t n = x.size(1);
  check_qubits(n);
  const double size = static_cast<double>(int64_t{1} << n);
  const at::Tensor phase = at::polar(at::ones({x.size(0), int64_t{1} << n}, at::kDouble),
                                     phase_angles(x.to(at::kDouble), spins(n)));
  // D · H/√N · D · (1/√N): H^{⊗n}|0⟩ is the uniform vector.
  const at::Tensor first = phase / std::sqrt(size);
  return phase * linalg::fwht(first) / std::sqrt(size);
}

at::Tensor quantum_gram(const at::Tensor& x, const at::Tensor& y, int64_t shots, uint64_t seed) {
  LR_CHECK(shots >= 0, InvalidArgument, "quantum kernel: shots must be >= 0 (0: exact), got ", shots);
  LR_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1), InvalidArgument,
           "quantum kernel: inputs [m, n] and [p, n] must share n, got ", x.sizes(), " and ", y.sizes());
  const at::Tensor overlap = at::matmul(quantum_feature_states(x), quantum_feature_states(y).conj().t());
  at::Tensor k = overlap.abs().pow(2).clamp(0.0, 1.0);
  if (shots > 0) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    k = at::binomial(at::full_like(k, static_cast<double>(shots)), k, gen) / static_cast<double>(shots);
  }
  return k;
}

AdHocDataset ad_hoc_dataset(int64_t qubits, int64_t per_class, double gap, uint64_t seed) {
  check_qubits(qubits);
  LR_CHECK(per_class >= 1, InvalidArgument, "ad hoc dataset: per_class must be >= 1, got ", per_class);
  LR_CHECK(gap >= 0 && gap < 1, InvalidArgument, "ad hoc dataset: the gap must be in [0, 1), got ", gap);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const int64_t size = int64_t{1} << qubits;
  // V: the eigenvectors of a random Hermitian AᴴA.
  const at::Tensor a = at::complex(at::empty({size, size}, at::kDouble).uniform_(0, 1, gen),
                                   at::empty({size, size}, at::kDouble).uniform_(0, 1, gen));
  const at::Tensor v = std::get<1>(at::linalg_eigh(at::matmul(a.conj().t(), a)));
  const at::Tensor parity = spins(qubits).prod(1).to(at::kComplexDouble);
  const at::Tensor observable = at::matmul(v.conj().t() * parity.unsqueeze(0), v);  // V† diag(parity) V
  std::vector<at::Tensor> rows[2];
  int64_t drawn = 0;
  while (static_cast<int64_t>(rows[0].size()) < per_class ||
         static_cast<int64_t>(rows[1].size()) < per_class) {
    LR_CHECK(drawn < 1000000, InvalidArgument, "ad hoc dataset: gap ", gap, " leaves too few points");
    const at::Tensor x = at::empty({256, qubits}, at::kDouble).uniform_(0, 2 * kPi, gen);
    drawn += 256;
    const at::Tensor states = quantum_feature_states(x);
    const at::Tensor value = at::real((states.conj() * at::matmul(states, observable.t())).sum(1));
    for (int64_t i = 0; i < 256; ++i) {
      const double e = value[i].item<double>();
      if (std::abs(e) <= gap) continue;
      auto& bucket = rows[e > 0 ? 1 : 0];
      if (static_cast<int64_t>(bucket.size()) < per_class) bucket.push_back(x[i]);
    }
  }
  std::vector<at::Tensor> xs;
  std::vector<double> labels;
  for (int64_t i = 0; i < per_class; ++i) {
    xs.push_back(rows[1][i]);
    labels.push_back(1.0);
    xs.push_back(rows[0][i]);
    labels.push_back(-1.0);
  }
  return {at::stack(xs), at::tensor(labels, at::kDouble)};
}

namespace {

class QuantumKernelSvm final : public Estimator {
 public:
  QuantumKernelSvm(const Json& options, uint64_t seed) : Estimator(options, seed) {
    svm_.c = json_get_or<double>(options, "c", 1.0, kName);
    svm_.tolerance = json_get_or<double>(options, "tolerance", 1e-3, kName);
    shots_ = json_get_or<int64_t>(options, "shots", 0, kName);
    LR_CHECK(std::isfinite(svm_.c) && svm_.c > 0, InvalidArgument, kName, ": option \"c\" must be > 0, got ",
             svm_.c);
    LR_CHECK(svm_.tolerance > 0, InvalidArgument, kName, ": option \"tolerance\" must be > 0, got ",
             svm_.tolerance);
    LR_CHECK(shots_ >= 0, InvalidArgument, kName, ": option \"shots\" must be >= 0 (0: exact), got ", shots_);
  }
  std::string_view method() const override { return kName; }

  // The SVM decision values f(x) (positive: the larger label).
  at::Tensor decision(const at::Tensor& x) const {
    return svm_decision(solution_, quantum_gram(x, train_x_, shots_, seed() + 1));
  }

 protected:
  void fit_impl(const Dataset& data) override {
    LR_CHECK(data.y.defined() && data.y.dim() == 1, InvalidArgument, kName, ": ", data.source,
             " needs one label column");
    check_qubits(data.x.size(1));
    const at::Tensor values = std::get<0>(at::_unique(data.y));
    LR_CHECK(values.size(0) == 2, InvalidArgument, kName,
             ": binary classification needs exactly 2 label values, got ", values.size(0));
    label_values_ = values;
    const at::Tensor signs = at::where(data.y.eq(values[1]), 1.0, -1.0).to(at::kDouble);
    train_x_ = data.x;
    const at::Tensor k = quantum_gram(train_x_, train_x_, shots_, seed());
    solution_ = svm_fit(k, signs, svm_);
    const double accuracy =
        svm_decision(solution_, k).gt(0).eq(signs.gt(0)).to(at::kDouble).mean().item<double>();
    report_ = {{"qubits", data.x.size(1)},
               {"shots", shots_},
               {"train_accuracy", accuracy},
               {"smo_iterations", solution_.iterations},
               {"converged", solution_.converged}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    return at::where(decision(x).gt(0), label_values_[1], label_values_[0]);
  }
  std::vector<NamedTensor> state() const override {
    return {{"train_x", train_x_},
            {"dual_coef", solution_.dual_coef},
            {"rho", at::tensor({solution_.rho}, at::kDouble)},
            {"label_values", label_values_}};
  }
  void restore(const SafetensorsFile& file) override {
    train_x_ = expect_state(file, "train_x");
    solution_.dual_coef = expect_state(file, "dual_coef");
    solution_.rho = expect_state(file, "rho").item<double>();
    label_values_ = expect_state(file, "label_values");
  }

 private:
  SvmOptions svm_;
  int64_t shots_ = 0;
  at::Tensor train_x_, label_values_;
  SvmSolution solution_;
};

}  // namespace

void register_quantum_kernel(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "SVM on the quantum-kernel Gram |⟨Φ(x)|Φ(x')⟩|² of a simulated ZZ feature map",
       "Havlíček et al., 2019, Nature 567:209, arXiv:1804.11326",
       {{"c", "SVM box constraint C > 0 (default 1)"},
        {"tolerance", "SMO stopping tolerance (default 1e-3, LIBSVM's)"},
        {"shots", "measurement shots per kernel entry (default 0: exact probabilities)"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<QuantumKernelSvm>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
