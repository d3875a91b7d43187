// libFuzzer target for the GGUF reader (src/lowrank/core/gguf.h, torch-free). Built and run by
// scripts/fuzz with LOWRANK_FUZZ_TARGET=gguf, not by CMake.
//
// Properties checked on every input:
// - gguf::parse either returns or throws lowrank::Corruption / lowrank::Unsupported: no crash, no
//   sanitizer report, no other exception (an uncaught one aborts and counts as a crash);
// - on success every tensor's bytes lie inside the input at an aligned offset, in header order;
// - the writer's header (plan_layout) of the parsed metadata and tensors, followed by the tensor
//   bytes, parses back to the same metadata, tensors and alignment.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/gguf.h"

namespace gguf = lowrank::gguf;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  gguf::Header header;
  try {
    header = gguf::parse(file, "fuzz-input");
  } catch (const lowrank::Corruption&) {
    return 0;
  } catch (const lowrank::Unsupported&) {
    return 0;
  }
  if (header.data_start % header.alignment != 0 || header.data_start > size) __builtin_trap();
  volatile unsigned sink = 0;
  uint64_t previous_end = 0;
  for (const gguf::TensorInfo& t : header.tensors) {
    const std::span<const std::byte> bytes = gguf::tensor_bytes(file, header, t);
    if (t.offset % header.alignment != 0 || t.offset < previous_end || bytes.size() != t.byte_count() ||
        bytes.data() + bytes.size() > file.data() + file.size())
      __builtin_trap();
    if (!bytes.empty())
      sink = sink + static_cast<unsigned>(bytes.front()) + static_cast<unsigned>(bytes.back());
    previous_end = t.offset + bytes.size();
  }

  // The writer refuses names llama.cpp cannot load (empty, over 63 bytes), which a reader accepts.
  for (const gguf::TensorInfo& t : header.tensors)
    if (t.name.empty() || t.name.size() > gguf::kMaxNameBytes) return 0;
  const gguf::Layout layout = gguf::plan_layout(header.metadata, header.tensors, "fuzz-layout");
  std::vector<std::byte> rewritten(layout.prefix.size());
  std::memcpy(rewritten.data(), layout.prefix.data(), layout.prefix.size());
  for (size_t i = 0; i < header.tensors.size(); ++i) {
    const std::span<const std::byte> bytes = gguf::tensor_bytes(file, header, header.tensors[i]);
    rewritten.resize(layout.prefix.size() + layout.tensors[i].offset);
    rewritten.insert(rewritten.end(), bytes.begin(), bytes.end());
  }
  const gguf::Header again = gguf::parse(rewritten, "fuzz-rewritten");  // throws (= crash) if invalid
  if (again.metadata != header.metadata || again.alignment != header.alignment ||
      again.tensors.size() != header.tensors.size())
    __builtin_trap();
  for (size_t i = 0; i < again.tensors.size(); ++i) {
    const gguf::TensorInfo &a = again.tensors[i], &b = header.tensors[i];
    if (a.name != b.name || a.dims != b.dims || a.type != b.type) __builtin_trap();
    const auto x = gguf::tensor_bytes(rewritten, again, a), y = gguf::tensor_bytes(file, header, b);
    if (x.size() != y.size() || !std::equal(x.begin(), x.end(), y.begin())) __builtin_trap();
  }
  return 0;
}
