// A request's event queue; see request_stream.h.
#include "lowrank/serve/request_stream.h"

#include <utility>

namespace lowrank::serve {

void RequestStream::push(StreamEvent event) {
  {
    std::lock_guard lock(mutex_);
    if (event.kind == StreamEvent::Kind::kFinish) finished_ = true;
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

bool RequestStream::next(StreamEvent& event, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
  event = std::move(events_.front());
  events_.pop_front();
  return true;
}

StreamEvent RequestStream::wait(std::string* text, std::vector<int64_t>* tokens) {
  StreamEvent event;
  while (true) {
    if (!next(event, std::chrono::milliseconds(1000))) continue;
    if (text) *text += event.text;
    if (event.kind == StreamEvent::Kind::kFinish) return event;
    if (tokens) tokens->push_back(event.token);
  }
}

bool RequestStream::finished() const {
  std::lock_guard lock(mutex_);
  return finished_;
}

}  // namespace lowrank::serve
