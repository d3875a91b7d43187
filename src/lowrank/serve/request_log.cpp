// The request log's two line formats; see request_log.h.
#include "lowrank/serve/request_log.h"

#include <cmath>
#include <sstream>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"

namespace lowrank::serve {

LogFormat parse_log_format(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  throw InvalidArgument(str("--log-format must be text or json, got '", name, "'"));
}

namespace {

// Milliseconds to the microsecond: enough for a log, and short.
double rounded_ms(double ms) {
  return std::round(ms * 1000.0) / 1000.0;
}

}  // namespace

std::string request_log_json(const RequestRecord& r) {
  OrderedJson line{{"id", r.id},
                   {"endpoint", r.endpoint},
                   {"adapter", r.adapter},
                   {"user", r.user},
                   {"status", r.status},
                   {"finish_reason", r.finish_reasons},
                   {"prompt_tokens", r.prompt_tokens},
                   {"completion_tokens", r.completion_tokens},
                   {"queue_ms", rounded_ms(r.queue_ms)},
                   {"prefill_ms", rounded_ms(r.prefill_ms)},
                   {"decode_ms", rounded_ms(r.decode_ms)},
                   {"total_ms", rounded_ms(r.total_ms)}};
  // Client strings may hold bytes that are not UTF-8: replaced by U+FFFD rather than thrown on.
  return line.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

std::string request_log_text(const RequestRecord& r) {
  std::ostringstream out;
  out << "request " << (r.id.empty() ? "-" : r.id) << " " << r.endpoint << " status " << r.status;
  // The same escaping as the JSON line: a client string cannot start a new log line.
  out << " adapter " << OrderedJson(r.adapter).dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
  out << " finish ";
  for (size_t i = 0; i < r.finish_reasons.size(); ++i) out << (i ? "," : "") << r.finish_reasons[i];
  if (r.finish_reasons.empty()) out << "-";
  out << " tokens " << r.prompt_tokens << "+" << r.completion_tokens << " queue " << rounded_ms(r.queue_ms)
      << " ms prefill " << rounded_ms(r.prefill_ms) << " ms decode " << rounded_ms(r.decode_ms)
      << " ms total " << rounded_ms(r.total_ms) << " ms";
  return out.str();
}

void RequestLog::write(const RequestRecord& record) const {
  // log::write takes the log's lock, so a line is never split by another thread's. JSON lines were
  // asked for by name and are written whatever the level; the text line is an info message.
  if (format_ == LogFormat::kJson)
    log::write(log::Level::kInfo, request_log_json(record));
  else
    log::info(request_log_text(record));
}

}  // namespace lowrank::serve
