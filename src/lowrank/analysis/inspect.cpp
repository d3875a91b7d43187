#include "lowrank/analysis/inspect.h"

#include <cstdio>
#include <map>
#include <sstream>

#include "lowrank/core/safetensors.h"

namespace lowrank::analysis {
namespace fs = std::filesystem;
namespace {

// config.json keys worth a glance, in the order shown.
constexpr const char* kConfigKeys[] = {"architectures",
                                       "model_type",
                                       "hidden_size",
                                       "intermediate_size",
                                       "num_hidden_layers",
                                       "num_attention_heads",
                                       "num_key_value_heads",
                                       "head_dim",
                                       "vocab_size",
                                       "max_position_embeddings",
                                       "rope_theta",
                                       "rope_scaling",
                                       "rope_parameters",
                                       "rms_norm_eps",
                                       "tie_word_embeddings",
                                       "torch_dtype",
                                       "dtype",
                                       "attention_bias"};

std::string shape_text(const OrderedJson& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i].get<int64_t>());
  return s + "]";
}

std::string thousands(int64_t v) {
  std::string digits = std::to_string(v), out;
  int n = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (n && n % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++n;
  }
  return out;
}

}  // namespace

OrderedJson inspect_path(const fs::path& path) {
  Checkpoint ckpt = Checkpoint::open(path);
  OrderedJson tensors = OrderedJson::array();
  std::map<std::string, std::pair<int64_t, int64_t>> by_dtype;  // dtype -> (params, bytes)
  std::map<std::string, int64_t> count_by_dtype;
  int64_t params = 0, bytes = 0;
  for (const auto& name : ckpt.names()) {
    const TensorInfo& info = ckpt.info(name);
    std::string dtype(dtype_name(info.dtype));
    tensors.push_back({{"name", name},
                       {"dtype", dtype},
                       {"shape", info.shape},
                       {"params", info.numel()},
                       {"bytes", info.nbytes()}});
    params += info.numel();
    bytes += static_cast<int64_t>(info.nbytes());
    by_dtype[dtype].first += info.numel();
    by_dtype[dtype].second += static_cast<int64_t>(info.nbytes());
    count_by_dtype[dtype] += 1;
  }
  OrderedJson dtypes = OrderedJson::object();
  for (const auto& [d, pb] : by_dtype)
    dtypes[d] = {{"tensors", count_by_dtype[d]}, {"params", pb.first}, {"bytes", pb.second}};
  OrderedJson files = OrderedJson::array();
  for (const auto& f : ckpt.files()) files.push_back(f.string());
  OrderedJson metadata = OrderedJson::object();
  for (const auto& [k, v] : ckpt.metadata()) metadata[k] = v;

  OrderedJson report = {{"path", path.string()},
                        {"files", files},
                        {"metadata", metadata},
                        {"totals", {{"tensors", tensors.size()}, {"params", params}, {"bytes", bytes}}},
                        {"dtypes", dtypes}};
  const fs::path config_path = fs::is_directory(path) ? path / "config.json" : fs::path();
  if (!config_path.empty() && fs::exists(config_path)) {
    Json config = read_json_file(config_path);
    OrderedJson summary = OrderedJson::object();
    if (config.is_object())
      for (const char* key : kConfigKeys)
        if (config.contains(key) && !config[key].is_null()) summary[key] = config[key];
    report["config"] = summary;
  }
  report["tensors"] = tensors;
  return report;
}

std::string format_inspect(const OrderedJson& r) {
  std::ostringstream out;
  const auto& totals = r["totals"];
  out << r["path"].get<std::string>() << ": " << r["files"].size()
      << (r["files"].size() == 1 ? " file, " : " files, ") << thousands(totals["tensors"].get<int64_t>())
      << " tensors, " << thousands(totals["params"].get<int64_t>()) << " parameters, "
      << thousands(totals["bytes"].get<int64_t>()) << " bytes\n";
  if (r.contains("config")) {
    out << "\nconfig.json\n";
    for (const auto& [k, v] : r["config"].items()) out << "  " << k << ": " << v.dump() << "\n";
  }
  if (!r["metadata"].empty()) {
    out << "\nmetadata\n";
    for (const auto& [k, v] : r["metadata"].items()) out << "  " << k << ": " << v.get<std::string>() << "\n";
  }
  size_t width = 4;
  for (const auto& t : r["tensors"]) width = std::max(width, t["name"].get<std::string>().size());
  out << "\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-*s  %-5s  %-16s  %14s\n", static_cast<int>(width), "name", "dtype",
                "shape", "bytes");
  out << line;
  for (const auto& t : r["tensors"]) {
    std::snprintf(line, sizeof line, "%-*s  %-5s  %-16s  %14s\n", static_cast<int>(width),
                  t["name"].get<std::string>().c_str(), t["dtype"].get<std::string>().c_str(),
                  shape_text(t["shape"]).c_str(), thousands(t["bytes"].get<int64_t>()).c_str());
    out << line;
  }
  out << "\nby dtype\n";
  for (const auto& [d, v] : r["dtypes"].items())
    out << "  " << d << ": " << v["tensors"].get<int64_t>() << " tensors, "
        << thousands(v["params"].get<int64_t>()) << " parameters, " << thousands(v["bytes"].get<int64_t>())
        << " bytes\n";
  return out.str();
}

}  // namespace lowrank::analysis
