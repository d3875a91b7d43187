// Incremental detokenisation with OpenAI stop-string semantics; see text_stream.h.
#include "lowrank/data/text_stream.h"

#include <algorithm>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/data/tokenizer.h"

namespace lowrank::data {
namespace {

// Length of the longest suffix of `text` that is a proper prefix of some stop string: text that
// must be held back because the next token may complete a stop string.
size_t stop_prefix_suffix(std::string_view text, std::span<const std::string> stops) {
  size_t held = 0;
  for (const std::string& stop : stops)
    for (size_t n = std::min(stop.size() - 1, text.size()); n > held; --n)
      if (text.substr(text.size() - n) == std::string_view(stop).substr(0, n)) {
        held = n;
        break;
      }
  return held;
}

// The tokenizer decodes an incomplete UTF-8 sequence (a character split across tokens) to
// U+FFFD: the length of such a tail, which waits for the next token to complete it.
size_t replacement_tail(std::string_view text) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t held = 0;
  while (text.size() >= held + kReplacement.size() &&
         text.substr(text.size() - held - kReplacement.size(), kReplacement.size()) == kReplacement)
    held += kReplacement.size();
  return held;
}

}  // namespace

TextStream::Decode TextStream::decoder(const Tokenizer& tokenizer) {
  return [&tokenizer](std::span<const int64_t> ids) {
    const std::vector<int32_t> ids32(ids.begin(), ids.end());
    return tokenizer.decode(ids32, /*skip_special_tokens=*/true);
  };
}

TextStream::TextStream(Decode decode, TextStreamOptions options)
    : decode_(std::move(decode)), options_(std::move(options)) {
  for (const std::string& stop : options_.stop)
    LR_CHECK(!stop.empty(), InvalidArgument, "stop strings must not be empty");
  LR_CHECK(options_.stop.empty() || decode_, InvalidArgument,
           "stop strings need a tokenizer to turn tokens into text, and there is none");
  LR_CHECK(options_.max_tokens >= 0, InvalidArgument, "max_tokens must be >= 0, got ", options_.max_tokens);
}

std::string TextStream::push(int64_t token) {
  LR_CHECK(!finished(), InternalError, "text stream: token ", token, " pushed after the stream ended (",
           finish_reason_name(finish_), ")");
  tokens_.push_back(token);
  const bool stop_token = std::ranges::find(options_.stop_token_ids, token) != options_.stop_token_ids.end();
  const bool at_limit = options_.max_tokens > 0 && std::ssize(tokens_) >= options_.max_tokens;
  const bool last = stop_token || at_limit;  // release everything held back
  bool stopped = false;
  std::string out;
  if (decode_) {
    // Decode the context tokens and the tokens after them, and append what the latter add. The
    // offsets advance only past text that ends in a whole character and is not empty, so the
    // context starts on a character boundary.
    const size_t searched = text_.size();
    const std::span<const int64_t> ids(tokens_);
    const std::string context = decode_(ids.subspan(prefix_offset_, read_offset_ - prefix_offset_));
    const std::string window = decode_(ids.subspan(prefix_offset_));
    LR_CHECK(window.starts_with(context), Corruption, "incremental decoding: the text of tokens [",
             prefix_offset_, ", ", read_offset_, ") is not a prefix of the text of tokens [", prefix_offset_,
             ", ", ids.size(), ")");
    std::string added = window.substr(context.size());
    if (replacement_tail(added) > 0 && !last) {
      pending_ = std::move(added);
    } else if (!added.empty()) {
      text_ += added;
      pending_.clear();
      prefix_offset_ = read_offset_;
      read_offset_ = ids.size();
    }
    size_t end = text_.size();
    size_t found = std::string::npos;
    for (const std::string& stop : options_.stop)  // a new match ends in the appended text
      found = std::min(found, text_.find(stop, searched >= stop.size() ? searched - stop.size() + 1 : 0));
    if (found != std::string::npos) {
      text_.resize(found);  // OpenAI: the stop string and what follows are not part of the text
      pending_.clear();
      stopped = true;
      end = found;
    } else if (!last) {
      end -= stop_prefix_suffix(text_, options_.stop);
    }
    if (end > released_) {
      out = text_.substr(released_, end - released_);
      released_ = end;
    }
  }
  if (stopped || stop_token)
    finish_ = FinishReason::kStop;
  else if (at_limit)
    finish_ = FinishReason::kLength;
  return out;
}

std::string TextStream::end(FinishReason reason) {
  if (!finished()) finish_ = reason;
  std::string rest = text_.substr(released_) + pending_;
  text_.resize(released_);
  text_ += rest;
  released_ = text_.size();
  pending_.clear();
  return rest;
}

}  // namespace lowrank::data
