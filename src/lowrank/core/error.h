// The lowrank::Error hierarchy. The library throws; only the edges (CLI, HTTP) translate
// errors to exit codes or statuses. Each message names the file, field or value at fault.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lowrank {

enum class ErrorKind { kInvalidArgument, kNotFound, kCorruption, kUnsupported, kIo, kInternal };

std::string_view error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  // True for errors the user can act on (bad input, missing file); false for bugs.
  bool is_user_error() const { return kind_ != ErrorKind::kInternal; }

 private:
  ErrorKind kind_;
};

#define LOWRANK_DEFINE_ERROR(Name, Kind)                                           \
  class Name : public Error {                                                      \
   public:                                                                         \
    explicit Name(const std::string& message) : Error(ErrorKind::Kind, message) {} \
  };
LOWRANK_DEFINE_ERROR(InvalidArgument, kInvalidArgument)
LOWRANK_DEFINE_ERROR(NotFound, kNotFound)
LOWRANK_DEFINE_ERROR(Corruption, kCorruption)
LOWRANK_DEFINE_ERROR(Unsupported, kUnsupported)
LOWRANK_DEFINE_ERROR(IoError, kIo)
LOWRANK_DEFINE_ERROR(InternalError, kInternal)
#undef LOWRANK_DEFINE_ERROR

// Concatenates any streamable values: str("rank ", r, " > ", n).
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

}  // namespace lowrank

// LR_CHECK(cond, Category, parts...) throws lowrank::Category(str(parts...)) when cond is false.
#define LR_CHECK(cond, Category, ...)                                    \
  do {                                                                   \
    if (!(cond)) throw ::lowrank::Category(::lowrank::str(__VA_ARGS__)); \
  } while (0)
