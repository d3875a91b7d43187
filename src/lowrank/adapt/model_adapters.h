// Adapters on a whole model: create one from a configuration, load and save PEFT adapter
// directories (adapter_config.json + adapter_model.safetensors), merge into the dense base,
// detach, and extract a LoRA from the difference of two checkpoints.
//
// PEFT's file layout (peft/utils/save_and_load.py): tensor names are
//   base_model.model.<module>.<name relative to the slot>
// e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight, with the adapter name
// stripped; `modules_to_save` modules are stored under their own names
// (base_model.model.lm_head.weight). safetensors metadata {"format": "pt"}.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/adapt/adapter.h"
#include "lowrank/adapt/config.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"

namespace lowrank::adapt {

// One adapter attached to a model: its configuration and its per-slot layers.
struct AttachedAdapter {
  std::string name;
  AdapterConfig config;
  std::vector<std::pair<std::string, std::shared_ptr<TrainableAdapter>>> layers;  // slot -> layer
  // modules_to_save: slot -> the adapter's full copy of that module, which replaces the base.
  std::vector<std::pair<std::string, std::shared_ptr<const nn::DenseOperator>>> saved_modules;
  // The bases the saved modules replaced, restored on detach (filled when attached).
  std::vector<std::pair<std::string, std::shared_ptr<const nn::BaseOperator>>> original_bases;

  // Trainable tensors under PEFT's file names (base_model.model.<module>.<name>).
  nn::NamedTensors parameters() const;
  int64_t num_parameters() const;
  void set_training(bool training);
  // The combination weight of every layer (Δ is multiplied by it).
  void set_weight(double weight);
};

// The prefix PEFT puts before every module name in adapter files.
inline constexpr std::string_view kPeftPrefix = "base_model.model.";

// Creates a freshly initialised adapter `name` of `config.method` on every slot the config
// targets and attaches it. `seed` seeds the random initialisations. All layers are built before
// any is attached: on error (no slot matched, rank too large, name taken) the model is unchanged.
// Throws InvalidArgument / NotFound (unknown method).
// Methods with needs_gradient get `gradients` (slot name -> dL/dW) in their LayerSpec; a
// targeted slot missing from it is an InvalidArgument.
AttachedAdapter create_adapter(nn::Model& model, std::string name, AdapterConfig config, uint64_t seed,
                               const std::map<std::string, at::Tensor>& gradients = {});

// The gradient of `loss_fn(model)` with respect to the dense weight of every slot `config`
// targets, summed over `batches` calls (for needs_gradient initialisations). The model's
// weights are left as they were (no gradient kept on them).
std::map<std::string, at::Tensor> slot_gradients(nn::Model& model, const AdapterConfig& config,
                                                 const std::function<at::Tensor(const nn::Model&)>& loss_fn,
                                                 int64_t batches);

// Loads a PEFT adapter directory and attaches it as `name` (default: the directory's name).
// Checks every tensor against the model before attaching anything; errors name the file and the
// module. Throws NotFound, InvalidArgument, Unsupported, Corruption.
AttachedAdapter load_adapter(nn::Model& model, const std::filesystem::path& dir, std::string name = {});

// load_adapter in two halves. read_adapter reads and checks the directory and builds the layers
// against `model`'s slots without attaching them: it only reads the model (slot names, shapes,
// dtype), so it may run while another thread runs forward passes (the serving engine loads so,
// and holds its model lock only for attach_adapter). attach_adapter attaches prepared layers (and
// saved modules), all or nothing: it throws InvalidArgument, changing nothing, when the name is
// already attached to one of the slots.
AttachedAdapter read_adapter(const nn::Model& model, const std::filesystem::path& dir, std::string name = {});
void attach_adapter(nn::Model& model, AttachedAdapter& adapter);

// Parses "DIR" or "DIR:WEIGHT" (the CLI's --adapter form); loads each, sets its weight, and
// returns them. Adapter names are the directory names, made unique with a suffix.
std::vector<AttachedAdapter> load_adapters(nn::Model& model, const std::vector<std::string>& specs);

// Writes `adapter` as a PEFT directory (each file atomically). Methods with a finalize() form
// (PiSSA -> rank-2r LoRA, SoRA -> pruned LoRA) are written in that form with the matching config.
// Returns the configuration written.
AdapterConfig save_adapter(const AttachedAdapter& adapter, const std::filesystem::path& dir);

// Removes the adapter's layers from their slots (and restores replaced bases).
void detach_adapter(nn::Model& model, const AttachedAdapter& adapter);

// Folds every attached adapter into its slot's dense base (W ← merged weight) and detaches it.
// Throws Unsupported for a slot whose base is not dense.
void merge_adapters(nn::Model& model, std::vector<AttachedAdapter>& adapters);

struct ExtractOptions {
  int64_t rank = 16;
  // Slots whose relative difference ‖ΔW‖/‖W‖ is below this are skipped (unchanged layers).
  double min_relative_change = 1e-6;
};

// One slot of an extraction: the captured energy Σ_{i<r} σᵢ² / ‖ΔW‖²_F.
struct ExtractedSlot {
  std::string module;
  double relative_change = 0;  // ‖ΔW‖_F / ‖W_base‖_F
  double energy = 0;
};

// LoRA of rank r from ΔW = W_tuned − W_base per slot by truncated SVD (B = U_r √S_r,
// A = √S_r V_rᵀ, α = r so s = 1), written as a PEFT directory. Returns the per-slot report.
std::vector<ExtractedSlot> extract_lora(const nn::Model& base, const nn::Model& tuned,
                                        const ExtractOptions& options, const std::filesystem::path& out_dir);

OrderedJson extract_report_json(const std::vector<ExtractedSlot>& slots, int64_t rank);

}  // namespace lowrank::adapt
