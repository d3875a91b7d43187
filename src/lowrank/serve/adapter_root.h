// The adapter root: the one directory the server loads adapters from, and the confinement that
// keeps every load inside it. A client names an adapter (and optionally a path) in
// /v1/load_lora_adapter; the name must be a plain directory name, and the directory it resolves
// to, symlinks followed, must lie strictly inside the root: neither "../x", an absolute path
// elsewhere, nor a symlink pointing out of the root escapes it. At start, `lowrank serve
// --adapters ROOT` registers every adapter directory under the root the same way.
// Errors are ApiError (openai_api.h), so that the HTTP layer answers with their status.
#pragma once

#include <filesystem>
#include <string_view>
#include <vector>

#include "lowrank/serve/engine.h"
#include "lowrank/serve/openai_api.h"

namespace lowrank::serve {

// Throws ApiError 400 (param `param`) unless `name` can name an adapter: non-empty, at most 255
// bytes, no '/', '\\' or NUL, not starting with '.', no control characters.
void check_adapter_name(std::string_view name, std::string_view param = "lora_name");

// The directory of adapter `name` under `root`: root/name, or `lora_path` when given (relative to
// root, or absolute). Either way the canonical path (symlinks resolved) must lie strictly inside
// the canonical root, so neither "../x" nor a symlink pointing out of the root escapes it.
// Throws ApiError 400 for a bad name or a path outside the root, 404 when the directory or its
// adapter_config.json does not exist. Returns the canonical path.
std::filesystem::path resolve_adapter_dir(const std::filesystem::path& root, std::string_view name,
                                          std::string_view lora_path = {});

// Registers every subdirectory of `root` that holds adapter_config.json under its directory
// name (sorted by name), each resolved by resolve_adapter_dir; entries that fail its checks are
// skipped with a warning. Throws NotFound when `root` is not a directory, and what
// Engine::load_adapter throws. Returns the adapters registered.
std::vector<AdapterInfo> register_adapter_root(Engine& engine, const std::filesystem::path& root);

}  // namespace lowrank::serve
