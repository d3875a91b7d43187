// One completions/chat call as engine requests, and its responses; see completion_task.h.
#include "lowrank/serve/completion_task.h"

#include <algorithm>
#include <utility>

#include "lowrank/data/tokenizer.h"

namespace lowrank::serve {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// A choice that ended by itself (stop, length, or a timeout reported as length), or one a
// shutdown's drain cut short, is answered with its text and finish reason; others with an error.
bool answered_with_text(FinishReason finish, EndedBy ended_by) {
  return finish == FinishReason::kStop || finish == FinishReason::kLength ||
         (finish == FinishReason::kCancelled && ended_by == EndedBy::kShutdown);
}

ApiError cancelled_error() {
  return ApiError(503, "the request was cancelled before it finished", "", "cancelled");
}

ApiError rejected_error(const std::string& message) {
  return ApiError(400, str("the request could not be served: ", message), "", "rejected");
}

}  // namespace

CompletionTask::CompletionTask(Engine& engine, ResponseMeta meta, Counters counters)
    : engine_(engine), meta_(std::move(meta)), counters_(std::move(counters)) {
  if (counters_.in_flight) ++*counters_.in_flight;
}

CompletionTask::~CompletionTask() {
  cancel_unfinished();
  if (counters_.in_flight) --*counters_.in_flight;
}

bool CompletionTask::submit(const GenerateCall& call, const std::string& adapter, int64_t& retry_after_s) {
  n_ = call.n;
  logprobs_ = call.logprobs;
  echo_ = call.echo;
  prompt_texts_ = call.prompt_texts;
  for (const auto& prompt : call.prompts) first_prompt_tokens_.push_back(prompt.front());
  for (const auto& prompt : call.prompts) {
    for (int64_t j = 0; j < call.n; ++j) {
      GenerationRequest request{.adapter = adapter, .prompt = prompt, .sampling = call.sampling};
      if (call.sampling.seed) request.sampling.seed = *call.sampling.seed + static_cast<uint64_t>(j);
      SubmitResult submitted;
      try {
        submitted = engine_.submit(std::move(request));
      } catch (const NotFound&) {  // the one check that the adapter exists (at admission)
        throw ApiError(404, str("The model '", call.model, "' does not exist"), "model", "model_not_found");
      }
      if (!submitted.stream) {
        retry_after_s = std::max<int64_t>(1, submitted.retry_after_s);
        return false;
      }
      Choice choice;
      choice.stream = std::move(submitted.stream);
      choices_.push_back(std::move(choice));
    }
  }
  live_ = choices_.size();
  return true;
}

bool CompletionTask::collect(std::vector<Event>& out, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const size_t before = out.size();
  for (;;) {
    for (size_t i = 0; i < choices_.size(); ++i) {
      StreamEvent e;
      while (!choices_[i].done && choices_[i].stream->next(e, 0ms)) apply(i, std::move(e), out);
    }
    if (out.size() > before || all_done()) return out.size() > before;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) return false;
    // Block on one live stream; with several, only briefly, then poll them all again.
    const auto first =
        std::find_if(choices_.begin(), choices_.end(), [](const Choice& c) { return !c.done; });
    const auto slice = live_ == 1 ? left : std::min(left, std::chrono::milliseconds(5));
    StreamEvent e;
    if (first->stream->next(e, slice))
      apply(static_cast<size_t>(first - choices_.begin()), std::move(e), out);
  }
}

bool CompletionTask::wait_all(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::vector<Event> events;
  while (!all_done()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) return false;
    events.clear();
    collect(events, left);
  }
  return true;
}

void CompletionTask::client_gone() {
  if (gone_.exchange(true)) return;
  if (!all_done() && counters_.on_disconnect) counters_.on_disconnect();
  cancel_unfinished();
}

void CompletionTask::cancel_unfinished() {
  for (Choice& c : choices_)
    if (!c.done && !c.stream->finished()) engine_.cancel(c.stream->id());
}

void CompletionTask::apply(size_t i, StreamEvent e, std::vector<Event>& out) {
  Choice& c = choices_[i];
  Event event{.choice = i, .event = {}, .echo = {}, .logprobs = nullptr};
  const bool first = !c.started;
  c.started = true;
  if (first && echo_) event.echo = prompt_texts_.at(prompt_of(i));
  if (first) c.prompt_logprobs = e.prompt_logprobs;
  if (e.logprobs) {
    c.logprobs.push_back(*e.logprobs);
    std::vector<LogprobEntry> entries;
    std::optional<int64_t> leading;
    if (first && echo_ && logprobs_ && !meta_.chat) {
      leading = first_prompt_tokens_.at(prompt_of(i));
      entries = c.prompt_logprobs;
    }
    entries.push_back(*e.logprobs);
    event.logprobs = logprobs_json(c.text_offset, leading, entries);
  }
  // A finish event may carry text too: what the request's text stream still held back when it
  // ended (at the token limit, a possible start of a stop string or an incomplete character).
  c.text += e.text;
  if (e.kind == StreamEvent::Kind::kFinish) {
    c.done = true;
    --live_;
    c.finish = e.finish;
    c.message = e.message;
    c.completion_tokens = e.completion_tokens;
    c.ended_by = e.ended_by;
    c.timings = e.timings;
  }
  event.event = std::move(e);
  out.push_back(std::move(event));
}

std::string CompletionTask::token_text(int64_t id) const {
  // Without a tokenizer (token-id requests), vLLM's "token_id:<id>" form.
  if (const data::Tokenizer* tokenizer = engine_.tokenizer()) {
    const int32_t ids[] = {static_cast<int32_t>(id)};
    return tokenizer->decode(ids);
  }
  return str("token_id:", id);
}

OrderedJson CompletionTask::logprobs_json(int64_t& text_offset, std::optional<int64_t> leading,
                                          std::span<const LogprobEntry> entries) const {
  const TokenText text = [this](int64_t id) { return token_text(id); };
  if (meta_.chat) return chat_logprobs(entries, text);
  return completion_logprobs(leading, entries, text_offset, text);
}

Usage CompletionTask::usage() const {
  Usage usage{.prompt_tokens = meta_.prompt_tokens};
  for (const Choice& c : choices_) usage.completion_tokens += c.completion_tokens;
  return usage;
}

OrderedJson CompletionTask::final_body() const {
  std::vector<serve::Choice> out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    if (!answered_with_text(c.finish, c.ended_by)) {
      if (c.finish == FinishReason::kCancelled) throw cancelled_error();
      throw rejected_error(c.message);
    }
    serve::Choice choice{
        .index = static_cast<int64_t>(i), .text = c.text, .finish = c.finish, .logprobs = nullptr};
    if (echo_) choice.text = prompt_texts_.at(prompt_of(i)) + c.text;
    if (logprobs_) {
      int64_t text_offset = 0;
      std::vector<LogprobEntry> entries;
      std::optional<int64_t> leading;
      if (echo_ && !meta_.chat) {
        leading = first_prompt_tokens_.at(prompt_of(i));
        entries = c.prompt_logprobs;
      }
      entries.insert(entries.end(), c.logprobs.begin(), c.logprobs.end());
      choice.logprobs = logprobs_json(text_offset, leading, entries);
    }
    out.push_back(std::move(choice));
  }
  return meta_.chat ? chat_response(meta_.id, meta_.created, meta_.model, out, usage())
                    : completion_response(meta_.id, meta_.created, meta_.model, out, usage());
}

std::vector<OrderedJson> CompletionTask::opening_chunks() const {
  std::vector<OrderedJson> out;
  if (!meta_.chat) return out;
  for (size_t i = 0; i < choices_.size(); ++i)
    out.push_back(chat_chunk(meta_.id, meta_.created, meta_.model, static_cast<int64_t>(i), "", std::nullopt,
                             /*role_only=*/true));
  return out;
}

std::vector<OrderedJson> CompletionTask::event_chunks(const Event& e) const {
  const auto index = static_cast<int64_t>(e.choice);
  const StreamEvent& ev = e.event;
  auto chunk = [&](const std::string& text, std::optional<FinishReason> finish, OrderedJson logprobs) {
    return meta_.chat ? chat_chunk(meta_.id, meta_.created, meta_.model, index, text, finish, false,
                                   std::move(logprobs))
                      : completion_chunk(meta_.id, meta_.created, meta_.model, index, text, finish,
                                         std::move(logprobs));
  };
  const bool finished_normally = answered_with_text(ev.finish, ev.ended_by);
  std::vector<OrderedJson> out;
  const std::string text = e.echo + ev.text;
  // A token's chunk carries its logprobs even when its text is held back (empty).
  if ((!text.empty() || !e.logprobs.is_null()) && (ev.kind == StreamEvent::Kind::kToken || finished_normally))
    out.push_back(chunk(text, std::nullopt, e.logprobs));
  if (ev.kind == StreamEvent::Kind::kFinish)
    out.push_back(finished_normally
                      ? chunk("", ev.finish, nullptr)
                      : error_body(ev.finish == FinishReason::kCancelled ? cancelled_error()
                                                                         : rejected_error(ev.message)));
  return out;
}

std::optional<OrderedJson> CompletionTask::usage_chunk() const {
  if (!meta_.include_usage) return std::nullopt;
  return serve::usage_chunk(meta_.id, meta_.created, meta_.model, meta_.chat, usage());
}

}  // namespace lowrank::serve
