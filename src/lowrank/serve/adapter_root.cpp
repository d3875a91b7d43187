// Adapter-root confinement and registration; see adapter_root.h.
#include "lowrank/serve/adapter_root.h"

#include <algorithm>
#include <string>
#include <system_error>

#include "lowrank/core/log.h"

namespace lowrank::serve {

namespace fs = std::filesystem;

void check_adapter_name(std::string_view name, std::string_view param) {
  const std::string p(param);
  if (name.empty()) throw ApiError(400, str("'", param, "' is empty"), p);
  if (name.size() > 255) throw ApiError(400, str("'", param, "' is longer than 255 bytes"), p);
  if (name.front() == '.') throw ApiError(400, str("'", param, "' must not start with '.'"), p);
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/' || c == '\\' || u < 0x20 || u == 0x7f)
      throw ApiError(400, str("'", param, "' must not contain '/', '\\\\', NUL or control characters"), p);
  }
}

fs::path resolve_adapter_dir(const fs::path& root, std::string_view name, std::string_view lora_path) {
  check_adapter_name(name);
  std::error_code ec;
  const fs::path canonical_root = fs::canonical(root, ec);
  // The root is the operator's; its path stays out of client-facing messages.
  if (ec || !fs::is_directory(canonical_root))
    throw ApiError(500, "the adapter root is not a readable directory");
  const std::string param = lora_path.empty() ? "lora_name" : "lora_path";
  if (lora_path.find('\0') != std::string_view::npos) throw ApiError(400, "'lora_path' contains NUL", param);
  fs::path candidate = lora_path.empty() ? canonical_root / fs::path(name) : fs::path(lora_path);
  if (candidate.is_relative()) candidate = canonical_root / candidate;
  // Symlinks in the existing part are resolved, ".." is removed lexically in the rest: what the
  // check below sees is where a later open would land.
  const fs::path resolved = fs::weakly_canonical(candidate, ec);
  if (ec) throw ApiError(404, str("adapter '", name, "' not found"), param, "adapter_not_found");
  auto [r, c] = std::mismatch(canonical_root.begin(), canonical_root.end(), resolved.begin(), resolved.end());
  const bool inside = r == canonical_root.end() && c != resolved.end() && !c->empty();
  if (!inside) throw ApiError(400, str("'", param, "' resolves outside the adapter root"), param);
  if (!fs::is_directory(resolved))
    throw ApiError(404, str("adapter '", name, "' not found under the adapter root"), param,
                   "adapter_not_found");
  if (!fs::is_regular_file(resolved / "adapter_config.json"))
    throw ApiError(404, str("adapter '", name, "' has no adapter_config.json"), param, "adapter_not_found");
  return resolved;
}

std::vector<AdapterInfo> register_adapter_root(Engine& engine, const fs::path& root) {
  LR_CHECK(fs::is_directory(root), NotFound, root.string(), ": the adapter root is not a directory");
  std::vector<fs::path> dirs;
  for (const fs::directory_entry& e : fs::directory_iterator(root))
    if (e.is_directory() && fs::is_regular_file(e.path() / "adapter_config.json")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  std::vector<AdapterInfo> infos;
  for (const fs::path& dir : dirs) {
    const std::string name = dir.filename().string();
    if (name.starts_with(".")) continue;  // hidden directories are not adapters
    fs::path resolved;
    try {
      resolved = resolve_adapter_dir(root, name);
    } catch (const ApiError& e) {
      log::warn(dir.string(), ": skipped (", e.what(), ")");
      continue;
    }
    infos.push_back(engine.load_adapter(name, resolved));
  }
  return infos;
}

}  // namespace lowrank::serve
