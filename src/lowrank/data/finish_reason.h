// FinishReason — why a generated sequence ended: one enum for the generation loop (nn/generate.h),
// the serving engine and scheduler (serve/), and the CLI, so that `lowrank generate` and the
// server report the same reason for the same request. The names are the OpenAI API's
// finish_reason where it has one ("stop", "length").
#pragma once

#include <string_view>

namespace lowrank::data {

enum class FinishReason {
  kNone,       // still running
  kStop,       // a stop token (eos, a requested stop id) or a stop string
  kLength,     // the token limit (max_new_tokens / max_tokens) was reached
  kCancelled,  // the caller stopped it (a client gone, a shutdown, a callback)
  kRejected,   // the server could no longer serve it (its adapter was unloaded while it waited)
};

// "none", "stop", "length", "cancelled", "rejected".
constexpr std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kRejected:
      return "rejected";
  }
  return "unknown";
}

}  // namespace lowrank::data
