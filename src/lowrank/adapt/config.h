// An adapter's configuration as PEFT writes it in `adapter_config.json` (peft/tuners/lora/config.py
// and peft/config.py): rank, alpha, dropout, rsLoRA/DoRA switches, and which linear slots it
// targets. Target selection follows peft/tuners/tuners_utils.py check_target_module_exists:
//   - a string `target_modules` is a regex that must match the whole module name;
//   - a list entry matches a name equal to it or ending in "." + entry;
//   - "all-linear" is every linear slot but the output layer (lm_head);
//   - `exclude_modules` (same rules) removes matches;
//   - `layers_to_transform` keeps modules whose layer index (the number after one of
//     `layers_pattern`, default "layers", "h", "block", "blocks", "layer") is listed.
// `rank_pattern` / `alpha_pattern` keys are regexes K matched as re.match(r"(.*\.)?(K)$", name);
// the first matching key (in file order) overrides r / lora_alpha for that module.
// Keys this file does not model are kept and written back unchanged, so a PEFT file survives a
// load/save round trip.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowrank/core/json.h"

namespace lowrank::adapt {

struct AdapterConfig {
  std::string peft_type = "LORA";  // as in adapter_config.json ("LORA", "RANDLORA", "LOWRANK_SVFIT", ...)
  std::string method = "lora";     // the lowrank registry name (adapt::registry())
  int64_t r = 8;
  double lora_alpha = 8;
  double lora_dropout = 0;
  bool use_rslora = false;  // scaling α/√r instead of α/r (Kalajdzievski, 2023)
  bool use_dora = false;
  std::vector<std::string> target_modules;  // list form
  std::optional<std::string> target_regex;  // string form (a regex), or "all-linear"
  std::vector<std::string> exclude_modules;
  std::optional<std::string> exclude_regex;
  std::vector<std::pair<std::string, int64_t>> rank_pattern;  // in file order
  std::vector<std::pair<std::string, double>> alpha_pattern;
  std::vector<int64_t> layers_to_transform;
  std::vector<std::string> layers_pattern;
  std::vector<std::string> modules_to_save;
  Json init_lora_weights = true;  // true | false | "gaussian" | "pissa" | "pissa_niter_N" | ...
  Json options = Json::object();  // method-specific options (key "lowrank_options")
  Json extra = Json::object();    // every other key of the file, written back as read
  // Whether to_json writes LoraConfig's own keys (lora_alpha, lora_dropout, use_rslora, use_dora,
  // exclude_modules, rank_pattern, alpha_pattern, init_lora_weights, lora_bias). Off for
  // peft_types whose PEFT config class lacks them (RandLoraConfig), which PEFT would warn about.
  bool write_lora_keys = true;

  // Parses adapter_config.json content. Throws InvalidArgument naming `what` and the key for a
  // wrong type or value (r < 1, alpha <= 0, dropout outside [0, 1), fan_in_fan_out = true,
  // bias other than "none", unknown peft_type).
  static AdapterConfig from_json(const Json& j, std::string_view what);
  // The file content: PEFT's keys (so PEFT loads it) plus `extra` and `lowrank_options`.
  OrderedJson to_json() const;

  // Whether the slot named `module` (an HF module name such as "model.layers.0.self_attn.q_proj")
  // is adapted. Throws InvalidArgument for a regex that does not compile.
  bool targets(std::string_view module) const;
  int64_t rank_for(std::string_view module) const;
  double alpha_for(std::string_view module) const;
  // lora_alpha/r, or lora_alpha/√r with rsLoRA, for this module's r and alpha.
  double scaling_for(std::string_view module) const;
  // A method option, with a default when absent. Throws InvalidArgument for a wrong type.
  template <typename T>
  T option(std::string_view key, T fallback) const {
    return json_get_or<T>(options, key, fallback, "adapter option");
  }
};

// Whether `module` is one of `names` or ends with ".<name>" for one of them: PEFT's rule for a
// list of target modules (and for modules_to_save).
bool module_listed(std::string_view module, const std::vector<std::string>& names);

// The decoder-layer index in a module name ("model.layers.3.mlp.up_proj" -> 3) found after one of
// `patterns` (PEFT's defaults when empty); nullopt when there is none.
std::optional<int64_t> layer_index(std::string_view module, const std::vector<std::string>& patterns);

}  // namespace lowrank::adapt
