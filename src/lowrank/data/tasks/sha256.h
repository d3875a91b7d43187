// SHA-256 (FIPS 180-4) of byte strings and files: the fingerprints task.json records for every
// task file, so that a reader can tell a corrupted or substituted file from the one written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace lowrank::data::tasks {

// Incremental SHA-256. update() any number of times, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  void update(std::span<const std::byte> bytes);
  void update(std::string_view text);
  // The digest as 64 lower-case hex digits. The object is spent afterwards.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);

  uint32_t state_[8];
  uint8_t buffer_[64];
  std::size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::span<const std::byte> bytes);
std::string sha256_hex(std::string_view text);
// The digest of a whole file (memory-mapped). Throws NotFound / IoError naming the path.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace lowrank::data::tasks
