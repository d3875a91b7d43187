// The Estimator API every kernel method implements, and the family's registry.
//
//   auto est = create_estimator("rf_ridge", options, seed);
//   est->fit(dataset);                   // Dataset: x [n, d], y [n] or [n, k] (dataset.h)
//   at::Tensor out = est->predict(x);    // what the method predicts: values, log densities, ...
//   est->save(dir);                      // format.h: kernel_config.json + kernel_model.safetensors
//   auto back = load_estimator(dir);     // the same predictions
//
// Options are a JSON object; each method lists its keys in its MethodInfo, and a key it does not
// know is an error naming the key and listing the known ones. Samplers and diagnostics that are
// not fit/predict are free functions in the method's header.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/core/registry.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/kernel_methods/dataset.h"

namespace lowrank::kernel_methods {

class Estimator {
 public:
  virtual ~Estimator() = default;

  virtual std::string_view method() const = 0;
  // Refits from scratch. Throws InvalidArgument naming the problem (missing targets, ...).
  void fit(const Dataset& data);
  // x [m, d] with d the fitted input dimension. Throws InvalidArgument before fit or on a width
  // mismatch.
  at::Tensor predict(const at::Tensor& x) const;
  // What the fit found worth reporting (jitter, evidence, risk estimates); saved with the model.
  const Json& report() const { return report_; }

  void save(const std::filesystem::path& dir) const;

  const Json& options() const { return options_; }
  uint64_t seed() const { return seed_; }
  int64_t input_dim() const { return input_dim_; }
  bool fitted() const { return input_dim_ > 0; }

 protected:
  Estimator(Json options, uint64_t seed) : options_(std::move(options)), seed_(seed) {}

  // Hooks: fit_impl sees a validated dataset (x fp64 [n, d]); predict_impl a validated x.
  virtual void fit_impl(const Dataset& data) = 0;
  virtual at::Tensor predict_impl(const at::Tensor& x) const = 0;
  // The fitted state, and its restoration from a saved model (input_dim_ already set).
  virtual std::vector<NamedTensor> state() const = 0;
  virtual void restore(const SafetensorsFile& file) = 0;
  // Whether the saved model records the SHA-256 of its training data (kernel_config.json's
  // data_sha256). A differentially private structure must not: a hash of the data is no noisy
  // aggregate, and it confirms a guessed dataset exactly.
  virtual bool records_data_hash() const { return true; }

  Json report_ = Json::object();

 private:
  friend std::unique_ptr<Estimator> load_estimator(const std::filesystem::path& dir);

  Json options_;
  uint64_t seed_ = 0;
  int64_t input_dim_ = 0;
  std::string data_sha256_;
};

struct EstimatorMethod {
  // Builds an unfitted estimator; options already checked against the MethodInfo's keys.
  std::function<std::unique_ptr<Estimator>(const Json& options, uint64_t seed)> create;
};

Registry<EstimatorMethod>& registry();

// Checks the option keys against the method's MethodInfo (InvalidArgument naming an unknown key
// and listing the known ones), then builds it. NotFound for an unknown method.
std::unique_ptr<Estimator> create_estimator(const std::string& method, const Json& options, uint64_t seed);
// Reads a directory written by save().
std::unique_ptr<Estimator> load_estimator(const std::filesystem::path& dir);

// A tensor of a saved model, with a clear error when absent or of the wrong shape.
at::Tensor expect_state(const SafetensorsFile& file, const std::string& name);

}  // namespace lowrank::kernel_methods
