// Compressed model directories: the HF layout (config.json, model.safetensors) whose slots hold
// compressed operators under their own tensor names (`...q_proj.lowrank_u`, `...q_proj.qweight`,
// see compress/operators.h), plus lowrank_config.json naming each compressed slot's operator:
//   {"format": "lowrank.compressed", "version": 1, "method": "svd_llm", "compensation": null,
//    "slots": {"model.layers.0.self_attn.q_proj": {"kind": "lowrank", "rank": 24}, ...}}
// Slots absent from "slots" are dense as usual. Every loader of the CLI (eval, generate, logits)
// goes through load_model, which reads plain and compressed directories alike.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "lowrank/compress/operators.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"

namespace lowrank::compress {

inline constexpr const char* kCompressedConfigFile = "lowrank_config.json";

// True when `dir` holds a lowrank_config.json.
bool is_compressed_model(const std::filesystem::path& dir);

// Loads a plain HF model or a compressed one (its operators rebuilt from lowrank_config.json).
// Throws as nn::Model::load, plus Corruption naming lowrank_config.json and the slot for an
// unknown operator kind, a missing field or tensors that do not fit.
nn::Model load_model(const std::filesystem::path& dir, const nn::LoadOptions& options = {});

// Rebuilds one operator from its description and stored tensors (`read(name)` for names relative
// to the slot). Throws Corruption naming the slot.
std::shared_ptr<StoredOperator> load_operator(const Json& description, const std::string& slot, bool bias,
                                              const std::function<at::Tensor(const std::string&)>& read,
                                              at::ScalarType dtype, at::Device device);

// Writes `model` into `dir` (config.json, model.safetensors with floating tensors as `dtype`,
// lowrank_config.json listing every slot whose base is a compressed operator, `extra` merged into
// it) plus the side files of `source_dir` (nn::copy_model_side_files). Does not stage: callers write into a
// StagedDirectory (core/file.h). Throws IoError.
void save_compressed_model(const nn::Model& model, const std::filesystem::path& dir,
                           const std::filesystem::path& source_dir, at::ScalarType dtype,
                           const OrderedJson& extra = OrderedJson::object());

}  // namespace lowrank::compress
