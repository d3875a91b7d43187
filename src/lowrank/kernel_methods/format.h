// The on-disk form of a fitted kernel method: a directory holding
//   kernel_config.json        {"format": "lowrank-kernel-model", "format_version": 1, "method",
//                              "options", "seed", "input_dim", "data_sha256", "report"}
//   kernel_model.safetensors  the fitted state (fp64 unless the method says otherwise)
// Both are written into a staged directory renamed into place at the end, so an interrupted save
// leaves nothing behind. A reader refuses another format version, naming both.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::kernel_methods {

inline constexpr int kModelFormatVersion = 1;
inline constexpr const char* kModelConfigFile = "kernel_config.json";
inline constexpr const char* kModelTensorsFile = "kernel_model.safetensors";

struct ModelHeader {
  std::string method;
  Json options = Json::object();
  uint64_t seed = 0;
  int64_t input_dim = 0;
  std::string data_sha256;
  Json report = Json::object();  // what the fit reported (jitter, evidence, ...)
};

// Writes `dir` (which must not exist, or be empty) atomically.
void write_model(const std::filesystem::path& dir, const ModelHeader& header,
                 const std::vector<NamedTensor>& tensors);
// Throws NotFound for a missing directory or file, InvalidArgument for another format version.
ModelHeader read_model_header(const std::filesystem::path& dir);

}  // namespace lowrank::kernel_methods
