// Entry points of the model verbs (`lowrank logits`, `lowrank generate`) and the option parsing
// they share, so that the CLI only maps flags to these calls.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/model.h"

namespace lowrank::nn {

// "float32" (f32, fp32), "bfloat16" (bf16), "float16" (f16, fp16, half), "float64" (f64).
// Throws InvalidArgument naming the value and the accepted names.
at::ScalarType parse_dtype(std::string_view name);
// The inverse: "float32", "bfloat16", "float16", "float64"; Unsupported for any other type.
std::string dtype_name(at::ScalarType dtype);
// "cpu", "cuda", "cuda:N". Throws InvalidArgument for a bad name, Unsupported for CUDA without a
// CUDA build or device.
at::Device parse_device(std::string_view name);

struct LogitsRequest {
  std::filesystem::path model;   // HF model directory
  std::filesystem::path input;   // safetensors with int64 input_ids [B, T] (+ optional attention_mask)
  std::filesystem::path output;  // safetensors to write float32 logits [B, T, vocab] to (atomically)
  LoadOptions load;
};

// Loads the model, runs one forward pass under inference mode and writes the logits. Returns
// their shape. Throws NotFound / InvalidArgument naming the file and tensor at fault.
std::vector<int64_t> run_logits(const LogitsRequest& request);
// The same on a model already loaded (with its adapters attached).
std::vector<int64_t> run_logits(const Model& model, const std::filesystem::path& input,
                                const std::filesystem::path& output);

}  // namespace lowrank::nn
