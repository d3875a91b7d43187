// JSON (nlohmann) with errors that name the file and the key.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.h"

namespace lowrank {

using Json = nlohmann::json;
// Keeps keys in insertion order: configs and reports we write read the way they were built.
using OrderedJson = nlohmann::ordered_json;

// Parses a JSON file. Throws NotFound, IoError, or Corruption naming the file and the offset.
Json read_json_file(const std::filesystem::path& path);

// Parses JSON text; `what` names the source in error messages (a file, "the request body").
Json parse_json(std::string_view text, std::string_view what);

// Writes `value` pretty-printed (indent 2, trailing newline), atomically.
void write_json_file(const std::filesystem::path& path, const OrderedJson& value);
void write_json_file(const std::filesystem::path& path, const Json& value);

// Reads `key` from object `obj` as T. Throws InvalidArgument naming `what` and the key when
// the key is missing or has the wrong type.
template <typename T>
T json_get(const Json& obj, std::string_view key, std::string_view what) {
  auto it = obj.find(key);
  LR_CHECK(it != obj.end(), InvalidArgument, what, ": missing key \"", key, "\"");
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw InvalidArgument(str(what, ": key \"", key, "\" has the wrong type (", it->type_name(), ")"));
  }
}

// As json_get, with a default when the key is absent or null.
template <typename T>
T json_get_or(const Json& obj, std::string_view key, T fallback, std::string_view what) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  return json_get<T>(obj, key, what);
}

}  // namespace lowrank
