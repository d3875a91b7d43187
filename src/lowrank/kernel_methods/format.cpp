#include "lowrank/kernel_methods/format.h"

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"

namespace lowrank::kernel_methods {
namespace fs = std::filesystem;

void write_model(const fs::path& dir, const ModelHeader& header, const std::vector<NamedTensor>& tensors) {
  StagedDirectory staged(dir);
  OrderedJson config;
  config["format"] = "lowrank-kernel-model";
  config["format_version"] = kModelFormatVersion;
  config["method"] = header.method;
  config["options"] = header.options;
  config["seed"] = header.seed;
  config["input_dim"] = header.input_dim;
  config["data_sha256"] = header.data_sha256;
  config["report"] = header.report;
  save_safetensors(staged.path() / kModelTensorsFile, tensors, {{"method", header.method}});
  write_json_file(staged.path() / kModelConfigFile, config);
  staged.commit();
}

ModelHeader read_model_header(const fs::path& dir) {
  LR_CHECK(fs::is_directory(dir), NotFound, "no kernel model directory at ", dir.string());
  const fs::path path = dir / kModelConfigFile;
  LR_CHECK(fs::exists(path), NotFound, dir.string(), " holds no ", kModelConfigFile,
           " (not a model written by `lowrank kernel fit`)");
  const Json config = read_json_file(path);
  const std::string what = path.string();
  const int version = json_get<int>(config, "format_version", what);
  LR_CHECK(version == kModelFormatVersion, InvalidArgument, what, ": format version ", version,
           " (this build reads version ", kModelFormatVersion, ")");
  ModelHeader header;
  header.method = json_get<std::string>(config, "method", what);
  header.options = json_get_or<Json>(config, "options", Json::object(), what);
  header.seed = json_get<uint64_t>(config, "seed", what);
  header.input_dim = json_get<int64_t>(config, "input_dim", what);
  header.data_sha256 = json_get_or<std::string>(config, "data_sha256", "", what);
  header.report = json_get_or<Json>(config, "report", Json::object(), what);
  return header;
}

}  // namespace lowrank::kernel_methods
