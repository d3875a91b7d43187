// Files: read-only memory maps, whole-file reads, and atomic writes (temp file + rename, so a
// reader never sees a half-written output and a failure leaves nothing behind).
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace lowrank {

// A read-only, private memory map of a whole file. Move-only; unmaps on destruction.
class MappedFile {
 public:
  // Throws NotFound if the file does not exist, IoError if it cannot be opened or mapped.
  static MappedFile open(const std::filesystem::path& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }
  // Drops the whole pages inside `range` (a part of bytes()) from this process's resident set
  // once their contents have been copied out: the mapping stays valid and a later read pages
  // them back in from the page cache. Loading a model this way never holds the stored bytes and
  // the loaded tensors resident at once. Does nothing for an empty mapping.
  void release(std::span<const std::byte> range) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// Reads a whole file as text. Throws NotFound / IoError naming the path.
std::string read_text_file(const std::filesystem::path& path);
// The same, decompressed when the name ends in .gz. Corruption naming the path for a bad stream.
std::string read_text_file_gz(const std::filesystem::path& path);

// Writes to `<path>.tmp-XXXXXX` in the same directory, then renames over `path` on commit().
// If commit() is never reached (an exception, an early return) the temp file is removed.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  void write(std::span<const std::byte> bytes);
  void write(std::string_view text);
  // Flushes to disk and renames into place. Throws IoError on failure (temp file removed).
  void commit();

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
};

// Convenience: the whole content at once, atomically.
void write_file_atomic(const std::filesystem::path& path, std::string_view text);

// An output directory built under a temporary name next to `target` (same file system) and
// renamed onto it by commit(), so a reader never sees a half-written directory and a failure leaves
// nothing behind. The constructor checks that `target` does not exist (an empty directory is
// allowed and replaced) and that its parent does: InvalidArgument / NotFound naming the path, so a
// caller that constructs it first fails before any work.
class StagedDirectory {
 public:
  explicit StagedDirectory(const std::filesystem::path& target);
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;
  ~StagedDirectory();

  // Where to write until commit().
  const std::filesystem::path& path() const { return temp_; }
  const std::filesystem::path& target() const { return target_; }
  // Renames into place. Throws IoError.
  void commit();

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
};

}  // namespace lowrank
