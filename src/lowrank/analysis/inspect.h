// `lowrank inspect`: what a safetensors file or an HF model directory holds.
#pragma once

#include <filesystem>
#include <string>

#include "lowrank/core/json.h"

namespace lowrank::analysis {

// A report of the tensors (name, dtype, shape, bytes, file), totals per dtype, the files'
// __metadata__, and a summary of config.json when the path is a model directory holding one.
// Throws NotFound / Corruption (from the safetensors reader) naming the file.
OrderedJson inspect_path(const std::filesystem::path& path);

// The same report as aligned text for people.
std::string format_inspect(const OrderedJson& report);

}  // namespace lowrank::analysis
