// libFuzzer target for the safetensors header parser and validator (the format spec is in
// src/lowrank/core/safetensors_format.h). Built and run by scripts/fuzz, not by CMake.
//
// Properties checked on every input:
// - parse_header either returns or throws lowrank::Corruption / lowrank::Unsupported: no crash,
//   no sanitizer report, no other exception (an uncaught one aborts and counts as a crash);
// - on success every tensor's byte span lies inside the input, has numel * dtype size bytes, and
//   the spans tile the buffer exactly;
// - the writer's layout (plan_layout) of the parsed tensors and metadata parses back to the same
//   tensors and metadata.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors_format.h"

namespace {

using lowrank::TensorInfo;
namespace st = lowrank::safetensors;

// Names, dtypes and shapes, whatever the offsets.
std::map<std::string, std::tuple<lowrank::Dtype, std::vector<int64_t>>> summary(
    const std::vector<TensorInfo>& ts) {
  std::map<std::string, std::tuple<lowrank::Dtype, std::vector<int64_t>>> out;
  for (const TensorInfo& t : ts) out.emplace(t.name, std::tuple(t.dtype, t.shape));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  st::Header header;
  try {
    header = st::parse_header(file, "fuzz-input");
  } catch (const lowrank::Corruption&) {
    return 0;
  } catch (const lowrank::Unsupported&) {
    return 0;
  }

  uint64_t total = 0;
  volatile unsigned sink = 0;
  for (const TensorInfo& t : header.tensors) {
    std::span<const std::byte> bytes = st::tensor_bytes(file, header, t);
    if (bytes.size() != t.nbytes() ||
        bytes.size() != static_cast<uint64_t>(t.numel()) * lowrank::dtype_size(t.dtype))
      __builtin_trap();
    if (!bytes.empty())
      sink = sink + static_cast<unsigned>(bytes.front()) + static_cast<unsigned>(bytes.back());
    total += bytes.size();
  }
  if (total != header.buffer_size || header.data_start + header.buffer_size != size) __builtin_trap();

  // The writer's header for the same tensors must read back as the same tensors. (The writer
  // refuses an empty name, which a reader accepts.)
  for (const TensorInfo& t : header.tensors)
    if (t.name.empty()) return 0;
  const st::Layout layout = st::plan_layout(header.tensors, header.metadata, "fuzz-layout");
  std::vector<std::byte> rewritten(layout.prefix.size() + total);
  std::memcpy(rewritten.data(), layout.prefix.data(), layout.prefix.size());
  const st::Header again = st::parse_header(rewritten, "fuzz-rewritten");  // throws (= crash) if invalid
  if (summary(again.tensors) != summary(header.tensors) || again.metadata != header.metadata ||
      again.data_start % 8 != 0 || again.buffer_size != header.buffer_size)
    __builtin_trap();
  return 0;
}
