// TextStream — the text of a stream of generated tokens, released as it grows, with the stop rules
// of the OpenAI API. The one implementation behind the generation loop (nn/generate.h), the
// serving engine (serve/engine.h) and so both `lowrank generate` and `lowrank serve`: the same
// tokens give the same bytes and the same finish reason everywhere.
//
// push(token) appends one token and returns the text it releases:
//   - decoding is incremental (as vLLM's detokenize_incrementally): a token decodes only the
//     tokens since the last whole character, so it costs the same however long the text is;
//   - only whole UTF-8 characters are released: a character split across tokens decodes to U+FFFD
//     until its last byte arrives, and such a tail is held back;
//   - stop strings as in the OpenAI API: the first stop string to appear ends the stream and is
//     not part of the text, nor is anything after it; text that may be the start of a stop string
//     is held back until the following tokens show that it is not.
// The stream ends at a stop token (finish() == kStop), a stop string (kStop), or after max_tokens
// tokens (kLength); a stop on the last allowed token is a stop. When it ends by a stop token or the
// limit, everything held back is released with that token (an incomplete last character as
// U+FFFD, as decoding all tokens at once gives it). A stream ended from outside (cancelled,
// rejected) gets the held-back text from end().
// Requires a decoder that concatenates per-token text (byte-level BPE, word pieces), so that
// decoding a window that starts on a character boundary gives the text it has within the whole;
// push() throws Corruption if that does not hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/data/finish_reason.h"

namespace lowrank::data {

class Tokenizer;

struct TextStreamOptions {
  std::vector<std::string> stop;        // stop strings (non-empty; need a decoder)
  std::vector<int64_t> stop_token_ids;  // eos and any requested stop ids; their text is kept
  int64_t max_tokens = 0;               // the stream ends after this many tokens; 0: no limit
};

class TextStream {
 public:
  // Token ids -> text.
  using Decode = std::function<std::string(std::span<const int64_t> ids)>;
  // `tokenizer`'s decode without special tokens (as the OpenAI API's servers return text). The
  // tokenizer must outlive the decoder.
  static Decode decoder(const Tokenizer& tokenizer);

  // `decode` may be empty: tokens only, no text (the stream still ends at stop tokens and the
  // limit). Throws InvalidArgument for an empty stop string or stop strings without a decoder.
  TextStream(Decode decode, TextStreamOptions options);

  // Appends a generated token; returns the text it releases (often empty). Throws InternalError
  // once the stream has ended, Corruption for a decoder that is not incremental (above).
  std::string push(int64_t token);
  // Ends the stream early with `reason` (kCancelled, kRejected) unless it has ended already, and
  // returns the text still held back (none after a stop string).
  std::string end(FinishReason reason);

  FinishReason finish() const { return finish_; }
  bool finished() const { return finish_ != FinishReason::kNone; }
  const std::vector<int64_t>& tokens() const { return tokens_; }
  // The text released so far (by push and end).
  std::string_view text() const { return std::string_view(text_).substr(0, released_); }

 private:
  Decode decode_;
  TextStreamOptions options_;
  std::vector<int64_t> tokens_;
  FinishReason finish_ = FinishReason::kNone;
  std::string text_;     // decoded so far, cut before a stop string once one is found
  size_t released_ = 0;  // bytes of text_ returned so far
  // tokens_[prefix_offset_, read_offset_) is the context whose text already ends text_; pending_
  // is the text after it that ends in an incomplete character (U+FFFD), not yet in text_.
  size_t prefix_offset_ = 0, read_offset_ = 0;
  std::string pending_;
};

}  // namespace lowrank::data
