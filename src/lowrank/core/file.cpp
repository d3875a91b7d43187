#include "lowrank/core/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include "lowrank/core/error.h"

namespace lowrank {
namespace fs = std::filesystem;

MappedFile MappedFile::open(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw NotFound(str(path.string(), ": no such file"));
    throw IoError(str(path.string(), ": cannot open: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(str(path.string(), ": not a regular file"));
  }
  MappedFile file;
  file.path_ = path;
  file.size_ = static_cast<std::size_t>(st.st_size);
  if (file.size_ > 0) {
    void* p = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw IoError(str(path.string(), ": cannot map: ", std::strerror(err)));
    }
    file.data_ = static_cast<const std::byte*>(p);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

void MappedFile::release(std::span<const std::byte> range) const {
  if (data_ == nullptr || range.empty()) return;
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(range.data());
  const std::uintptr_t first = (begin + page - 1) / page * page;     // first whole page
  const std::uintptr_t last = (begin + range.size()) / page * page;  // end of the last one
  // Advice only: a failure leaves the pages resident, which is still correct.
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::string read_text_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw NotFound(str(path.string(), ": no such file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(str(path.string(), ": cannot open for reading"));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) throw IoError(str(path.string(), ": read failed"));
  return out.str();
}

std::string read_text_file_gz(const fs::path& path) {
  const std::string name = path.string();
  if (name.size() < 3 || name.compare(name.size() - 3, 3, ".gz") != 0) return read_text_file(path);
  std::error_code ec;
  if (!fs::exists(path, ec)) throw NotFound(str(name, ": no such file"));
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) throw IoError(str(name, ": cannot open for reading"));
  std::string text;
  std::vector<char> buffer(1 << 16);
  for (;;) {
    const int got = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()));
    if (got < 0) {
      int code = 0;
      const std::string message = gzerror(file, &code);
      gzclose(file);
      throw Corruption(str(name, ": gzip error: ", message));
    }
    if (got == 0) break;
    text.append(buffer.data(), static_cast<std::size_t>(got));
  }
  gzclose(file);
  return text;
}

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  std::string templ = path_.string() + ".tmp-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) throw IoError(str(path_.string(), ": cannot create a temporary file: ", std::strerror(errno)));
  temp_path_ = buf.data();
  ::fchmod(fd_, 0644);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  LR_CHECK(fd_ >= 0, InternalError, path_.string(), ": write after commit");
  const std::byte* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError(str(path_.string(), ": write failed: ", std::strerror(errno)));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::write(std::string_view text) {
  write(std::as_bytes(std::span(text.data(), text.size())));
}

void AtomicFile::commit() {
  LR_CHECK(fd_ >= 0, InternalError, path_.string(), ": committed twice");
  if (::fsync(fd_) != 0) throw IoError(str(path_.string(), ": fsync failed: ", std::strerror(errno)));
  ::close(fd_);
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    throw IoError(str(path_.string(), ": cannot rename into place: ", std::strerror(errno)));
  temp_path_.clear();
}

void write_file_atomic(const fs::path& path, std::string_view text) {
  AtomicFile file(path);
  file.write(text);
  file.commit();
}

StagedDirectory::StagedDirectory(const fs::path& target) {
  LR_CHECK(!target.empty(), InvalidArgument, "an output directory is required");
  target_ = fs::absolute(target).lexically_normal();
  if (target_.filename().empty()) target_ = target_.parent_path();
  std::error_code ec;
  LR_CHECK(!fs::exists(target_) || (fs::is_directory(target_) && fs::is_empty(target_, ec)), InvalidArgument,
           target_.string(), " already exists and is not an empty directory; give a new output directory");
  LR_CHECK(fs::is_directory(target_.parent_path()), NotFound, target_.parent_path().string(),
           ": the parent of the output directory does not exist");
  std::random_device entropy;
  temp_ = target_.parent_path() /
          str(".", target_.filename().string(), ".tmp-", ::getpid(), "-", std::hex, entropy());
  fs::create_directory(temp_, ec);
  LR_CHECK(!ec, IoError, temp_.string(), ": cannot create the temporary output directory: ", ec.message());
}

StagedDirectory::~StagedDirectory() {
  if (!temp_.empty()) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
}

void StagedDirectory::commit() {
  LR_CHECK(!temp_.empty(), InternalError, target_.string(), ": committed twice");
  std::error_code ec;
  if (fs::is_directory(target_) && fs::is_empty(target_, ec)) fs::remove(target_, ec);
  fs::rename(temp_, target_, ec);
  LR_CHECK(!ec, IoError, "cannot rename ", temp_.string(), " to ", target_.string(), ": ", ec.message());
  temp_.clear();
}

}  // namespace lowrank
