// adapter_config.json parsing and PEFT's target-module rules; see config.h.
#include "lowrank/adapt/config.h"

#include <cmath>
#include <mutex>
#include <regex>
#include <unordered_map>

#include "lowrank/core/error.h"

namespace lowrank::adapt {
namespace {

// The keys this struct models; everything else goes to `extra`.
constexpr std::string_view kModelled[] = {"peft_type",           "r",
                                          "lora_alpha",          "lora_dropout",
                                          "use_rslora",          "use_dora",
                                          "target_modules",      "exclude_modules",
                                          "rank_pattern",        "alpha_pattern",
                                          "layers_to_transform", "layers_pattern",
                                          "modules_to_save",     "init_lora_weights",
                                          "lowrank_options"};

bool modelled(std::string_view key) {
  for (std::string_view k : kModelled)
    if (k == key) return true;
  return false;
}

// Patterns are compiled once: targeting runs per slot and per lookup, and std::regex
// construction costs far more than a match.
const std::regex& compile(const std::string& pattern, std::string_view what) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::regex> cache;
  const std::lock_guard lock(mutex);
  if (auto it = cache.find(pattern); it != cache.end()) return it->second;
  try {
    return cache.emplace(pattern, std::regex(pattern, std::regex::ECMAScript)).first->second;
  } catch (const std::regex_error& e) {
    throw InvalidArgument(str(what, ": invalid regex \"", pattern, "\": ", e.what()));
  }
}

// A list of strings, a single string (-> regex), or null.
void read_modules(const Json& j, std::string_view key, std::vector<std::string>& list,
                  std::optional<std::string>& regex, std::string_view what) {
  if (!j.contains(key) || j.at(key).is_null()) return;
  const Json& v = j.at(key);
  if (v.is_string()) {
    regex = v.get<std::string>();
    return;
  }
  LR_CHECK(v.is_array(), InvalidArgument, what, ": \"", key, "\" must be a list of names or a regex string");
  for (const Json& e : v) {
    LR_CHECK(e.is_string(), InvalidArgument, what, ": \"", key, "\" entries must be strings, got ", e.dump());
    list.push_back(e.get<std::string>());
  }
}

bool name_matches(std::string_view module, const std::vector<std::string>& list,
                  const std::optional<std::string>& regex, bool all_linear_allowed) {
  if (regex) {
    if (all_linear_allowed && *regex == "all-linear")
      return module != "lm_head" && !module.ends_with(".lm_head");
    return std::regex_match(module.begin(), module.end(), compile(*regex, "target_modules"));
  }
  return module_listed(module, list);
}

template <typename T>
const T* pattern_value(const std::vector<std::pair<std::string, T>>& patterns, std::string_view module) {
  for (const auto& [key, value] : patterns) {
    const std::regex& re = compile("(.*\\.)?(" + key + ")$", "rank_pattern/alpha_pattern");
    if (std::regex_match(module.begin(), module.end(), re)) return &value;
  }
  return nullptr;
}

}  // namespace

bool module_listed(std::string_view module, const std::vector<std::string>& names) {
  for (const std::string& t : names) {
    if (module == t) return true;
    if (module.size() > t.size() && module.ends_with(t) && module[module.size() - t.size() - 1] == '.')
      return true;
  }
  return false;
}

std::optional<int64_t> layer_index(std::string_view module, const std::vector<std::string>& patterns) {
  static const std::vector<std::string> kDefault = {"layers", "h", "block", "blocks", "layer"};
  for (const std::string& p : patterns.empty() ? kDefault : patterns) {
    const std::regex& re = compile(".*\\." + p + "\\.(\\d+)\\..*", "layers_pattern");
    std::match_results<std::string_view::const_iterator> m;
    if (std::regex_match(module.begin(), module.end(), m, re)) return std::stoll(m[1].str());
  }
  return std::nullopt;
}

AdapterConfig AdapterConfig::from_json(const Json& j, std::string_view what) {
  LR_CHECK(j.is_object(), InvalidArgument, what, ": expected a JSON object");
  AdapterConfig c;
  c.peft_type = json_get_or<std::string>(j, "peft_type", c.peft_type, what);
  c.r = json_get_or<int64_t>(j, "r", c.r, what);
  LR_CHECK(c.r >= 1, InvalidArgument, what, ": \"r\" must be >= 1, got ", c.r);
  c.lora_alpha = json_get_or<double>(j, "lora_alpha", 8.0, what);  // LoraConfig default
  LR_CHECK(c.lora_alpha > 0 && std::isfinite(c.lora_alpha), InvalidArgument, what,
           ": \"lora_alpha\" must be positive, got ", c.lora_alpha);
  c.lora_dropout = json_get_or<double>(j, "lora_dropout", 0.0, what);
  LR_CHECK(c.lora_dropout >= 0 && c.lora_dropout < 1, InvalidArgument, what,
           ": \"lora_dropout\" must be in [0, 1), got ", c.lora_dropout);
  c.use_rslora = json_get_or<bool>(j, "use_rslora", false, what);
  c.use_dora = json_get_or<bool>(j, "use_dora", false, what);
  read_modules(j, "target_modules", c.target_modules, c.target_regex, what);
  read_modules(j, "exclude_modules", c.exclude_modules, c.exclude_regex, what);
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!j.contains(key) || j.at(key).is_null()) continue;
    LR_CHECK(j.at(key).is_object(), InvalidArgument, what, ": \"", key, "\" must be an object");
  }
  if (j.contains("rank_pattern") && j.at("rank_pattern").is_object())
    for (const auto& [k, v] : j.at("rank_pattern").items()) {
      LR_CHECK(v.is_number_integer() && v.get<int64_t>() >= 1, InvalidArgument, what, ": rank_pattern[\"", k,
               "\"] must be an integer >= 1, got ", v.dump());
      c.rank_pattern.emplace_back(k, v.get<int64_t>());
    }
  if (j.contains("alpha_pattern") && j.at("alpha_pattern").is_object())
    for (const auto& [k, v] : j.at("alpha_pattern").items()) {
      LR_CHECK(v.is_number() && v.get<double>() > 0, InvalidArgument, what, ": alpha_pattern[\"", k,
               "\"] must be a positive number, got ", v.dump());
      c.alpha_pattern.emplace_back(k, v.get<double>());
    }
  if (j.contains("layers_to_transform") && !j.at("layers_to_transform").is_null()) {
    const Json& v = j.at("layers_to_transform");
    if (v.is_number_integer()) {
      c.layers_to_transform.push_back(v.get<int64_t>());
    } else {
      LR_CHECK(v.is_array(), InvalidArgument, what, ": \"layers_to_transform\" must be an integer or a list");
      for (const Json& e : v) {
        LR_CHECK(e.is_number_integer(), InvalidArgument, what,
                 ": \"layers_to_transform\" entries must be integers");
        c.layers_to_transform.push_back(e.get<int64_t>());
      }
    }
  }
  if (j.contains("layers_pattern") && !j.at("layers_pattern").is_null()) {
    const Json& v = j.at("layers_pattern");
    if (v.is_string())
      c.layers_pattern.push_back(v.get<std::string>());
    else
      c.layers_pattern = json_get<std::vector<std::string>>(j, "layers_pattern", what);
  }
  if (j.contains("modules_to_save") && !j.at("modules_to_save").is_null())
    c.modules_to_save = json_get<std::vector<std::string>>(j, "modules_to_save", what);
  if (j.contains("init_lora_weights") && !j.at("init_lora_weights").is_null())
    c.init_lora_weights = j.at("init_lora_weights");
  if (j.contains("lowrank_options") && !j.at("lowrank_options").is_null()) {
    c.options = j.at("lowrank_options");
    LR_CHECK(c.options.is_object(), InvalidArgument, what, ": \"lowrank_options\" must be an object");
  }
  LR_CHECK(
      !json_get_or<bool>(j, "fan_in_fan_out", false, what), Unsupported, what,
      ": fan_in_fan_out = true (GPT-2 Conv1D layers) is not supported; Llama-family slots are nn.Linear");
  const std::string bias = json_get_or<std::string>(j, "bias", "none", what);
  LR_CHECK(bias == "none", Unsupported, what, ": bias = \"", bias, "\" is not supported (only \"none\")");
  LR_CHECK(!json_get_or<bool>(j, "lora_bias", false, what), Unsupported, what,
           ": lora_bias = true is not supported");
  for (const auto& [k, v] : j.items())
    if (!modelled(k)) c.extra[k] = v;
  return c;
}

OrderedJson AdapterConfig::to_json() const {
  OrderedJson j;
  // PEFT fails on keys it does not know only in older versions (newer ones warn); these are all
  // keys of LoraConfig, and with write_lora_keys off of the configs of other PEFT methods too.
  j["peft_type"] = peft_type;
  j["r"] = r;
  if (target_regex)
    j["target_modules"] = *target_regex;
  else
    j["target_modules"] = target_modules;
  if (write_lora_keys) {
    j["lora_alpha"] = lora_alpha;
    j["lora_dropout"] = lora_dropout;
    j["use_rslora"] = use_rslora;
    j["use_dora"] = use_dora;
    if (exclude_regex)
      j["exclude_modules"] = *exclude_regex;
    else if (!exclude_modules.empty())
      j["exclude_modules"] = exclude_modules;
    else
      j["exclude_modules"] = nullptr;
    OrderedJson rp = OrderedJson::object(), ap = OrderedJson::object();
    for (const auto& [k, v] : rank_pattern) rp[k] = v;
    for (const auto& [k, v] : alpha_pattern) ap[k] = v;
    j["rank_pattern"] = rp;
    j["alpha_pattern"] = ap;
    j["init_lora_weights"] = init_lora_weights;
  }
  if (layers_to_transform.empty())
    j["layers_to_transform"] = nullptr;
  else
    j["layers_to_transform"] = layers_to_transform;
  if (layers_pattern.empty())
    j["layers_pattern"] = nullptr;
  else
    j["layers_pattern"] = layers_pattern;
  if (modules_to_save.empty())
    j["modules_to_save"] = nullptr;
  else
    j["modules_to_save"] = modules_to_save;
  for (const char* k :
       {"fan_in_fan_out", "bias", "lora_bias", "task_type", "base_model_name_or_path", "inference_mode"})
    if (!extra.contains(k) && (write_lora_keys || std::string_view(k) != "lora_bias")) {
      if (std::string_view(k) == "bias")
        j[k] = "none";
      else if (std::string_view(k) == "task_type" || std::string_view(k) == "base_model_name_or_path")
        j[k] = nullptr;
      else if (std::string_view(k) == "inference_mode")
        j[k] = true;
      else
        j[k] = false;
    }
  for (const auto& [k, v] : extra.items()) j[k] = v;
  if (!options.empty()) j["lowrank_options"] = options;
  return j;
}

bool AdapterConfig::targets(std::string_view module) const {
  if (!name_matches(module, target_modules, target_regex, true)) return false;
  if ((exclude_regex || !exclude_modules.empty()) &&
      name_matches(module, exclude_modules, exclude_regex, false))
    return false;
  if (!layers_to_transform.empty()) {
    const std::optional<int64_t> layer = layer_index(module, layers_pattern);
    if (!layer) return false;
    bool listed = false;
    for (int64_t l : layers_to_transform) listed = listed || l == *layer;
    if (!listed) return false;
  }
  return true;
}

int64_t AdapterConfig::rank_for(std::string_view module) const {
  const int64_t* v = pattern_value(rank_pattern, module);
  return v ? *v : r;
}

double AdapterConfig::alpha_for(std::string_view module) const {
  const double* v = pattern_value(alpha_pattern, module);
  return v ? *v : lora_alpha;
}

double AdapterConfig::scaling_for(std::string_view module) const {
  const double rank = static_cast<double>(rank_for(module));
  return alpha_for(module) / (use_rslora ? std::sqrt(rank) : rank);
}

}  // namespace lowrank::adapt
