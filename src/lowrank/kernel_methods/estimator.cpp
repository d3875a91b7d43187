#include "lowrank/kernel_methods/estimator.h"

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/format.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace fs = std::filesystem;

void Estimator::fit(const Dataset& data) {
  LR_CHECK(data.x.defined() && data.x.dim() == 2 && data.x.size(0) >= 1, InvalidArgument, method(),
           ": the data must hold inputs x [n, d]");
  fit_impl(data);
  input_dim_ = data.x.size(1);
  data_sha256_ = records_data_hash() ? data.sha256 : std::string();
}

at::Tensor Estimator::predict(const at::Tensor& x) const {
  LR_CHECK(fitted(), InvalidArgument, method(), ": predict before fit");
  LR_CHECK(x.dim() == 2 && x.size(1) == input_dim_, InvalidArgument, method(), ": inputs must be [m, ",
           input_dim_, "], got ", x.sizes());
  LR_CHECK(at::isfinite(x).all().item<bool>(), InvalidArgument, method(), ": the inputs hold NaN or Inf");
  return predict_impl(x.to(at::kDouble));
}

void Estimator::save(const fs::path& dir) const {
  LR_CHECK(fitted(), InvalidArgument, method(), ": save before fit");
  ModelHeader header;
  header.method = std::string(method());
  header.options = options_;
  header.seed = seed_;
  header.input_dim = input_dim_;
  header.data_sha256 = data_sha256_;
  header.report = report_;
  write_model(dir, header, state());
}

Registry<EstimatorMethod>& registry() {
  static Registry<EstimatorMethod> r = Registry<EstimatorMethod>::built("kernel", register_builtin_methods);
  return r;
}

std::unique_ptr<Estimator> create_estimator(const std::string& method, const Json& options, uint64_t seed) {
  const Registry<EstimatorMethod>& methods = registry();
  const MethodInfo& info = methods.info(method);
  LR_CHECK(options.is_object(), InvalidArgument, "--options must be a JSON object, got ", options.dump());
  for (const auto& [key, _] : options.items()) {
    const bool known = std::any_of(info.options.begin(), info.options.end(),
                                   [&](const auto& option) { return option.first == key; });
    if (known) continue;
    std::string names;
    for (const auto& option : info.options) names += (names.empty() ? "" : ", ") + option.first;
    throw InvalidArgument(str(method, ": unknown option \"", key, "\" (known: ", names, ")"));
  }
  return methods.factory(method).create(options, seed);
}

std::unique_ptr<Estimator> load_estimator(const fs::path& dir) {
  const ModelHeader header = read_model_header(dir);
  std::unique_ptr<Estimator> estimator = create_estimator(header.method, header.options, header.seed);
  const fs::path tensors = dir / kModelTensorsFile;
  LR_CHECK(fs::exists(tensors), NotFound, dir.string(), " holds no ", kModelTensorsFile);
  estimator->input_dim_ = header.input_dim;
  estimator->data_sha256_ = header.data_sha256;
  estimator->report_ = header.report;
  estimator->restore(SafetensorsFile::open(tensors));
  return estimator;
}

at::Tensor expect_state(const SafetensorsFile& file, const std::string& name) {
  LR_CHECK(file.contains(name), Corruption, file.path().string(), ": no tensor \"", name, "\"");
  return file.load(name, at::kDouble);
}

}  // namespace lowrank::kernel_methods
