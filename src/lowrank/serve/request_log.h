// RequestLog — one line per finished generation call (/v1/completions, /v1/chat/completions) on
// stderr: who asked (id, adapter, user), what it cost (prompt and completion tokens), where the
// time went (queue, prefill, decode, total) and how it ended (HTTP status, finish reasons).
// `--log-format json` writes each as one JSON object per line, for log shippers (vLLM and
// llama.cpp's servers log requests as text only; the fields follow vLLM's per-request metrics:
// queue, prefill and decode time); `text` writes the same as one readable line.
//
// Strings from clients (the adapter name, `user`) may hold quotes, newlines or bytes that are not
// UTF-8; the JSON line escapes them and replaces invalid bytes with U+FFFD, so every line parses.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowrank::serve {

enum class LogFormat { kText, kJson };

// "text" or "json"; throws InvalidArgument naming --log-format and the value otherwise.
LogFormat parse_log_format(std::string_view name);

// One generation call as the request log reports it.
struct RequestRecord {
  std::string id;        // the response id (cmpl-…, chatcmpl-…); empty when refused before it had one
  std::string endpoint;  // the request path
  std::string adapter;   // "" = the base model
  std::string user;      // the request's `user` field, if any
  int status = 200;      // HTTP status (499: the client went away first, as nginx logs it)
  // Per choice: OpenAI's "stop" / "length", "abort" (a shutdown's drain ran out), "timeout" (the
  // server's request timeout; the API reports it as "length"), "cancelled" (the client went
  // away), "rejected", or "none" when it never ran.
  std::vector<std::string> finish_reasons;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // The slowest choice's phases (EndedBy's RequestTimings), and arrival to the last byte written.
  double queue_ms = 0;
  double prefill_ms = 0;
  double decode_ms = 0;
  double total_ms = 0;
};

// The record as one JSON object on one line (no trailing newline).
std::string request_log_json(const RequestRecord& record);
// The record as one readable line (no trailing newline).
std::string request_log_text(const RequestRecord& record);

class RequestLog {
 public:
  explicit RequestLog(LogFormat format) : format_(format) {}
  LogFormat format() const { return format_; }
  // Writes `record` to stderr as one line, whole, whatever the log level (lines from several
  // threads never interleave).
  void write(const RequestRecord& record) const;

 private:
  LogFormat format_;
};

}  // namespace lowrank::serve
