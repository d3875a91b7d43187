#include "lowrank/core/json.h"

#include "lowrank/core/file.h"

namespace lowrank {

Json parse_json(std::string_view text, std::string_view what) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    throw Corruption(str(what, ": invalid JSON at byte ", e.byte, ": ", e.what()));
  }
}

Json read_json_file(const std::filesystem::path& path) {
  return parse_json(read_text_file(path), path.string());
}

void write_json_file(const std::filesystem::path& path, const OrderedJson& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

void write_json_file(const std::filesystem::path& path, const Json& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

}  // namespace lowrank
