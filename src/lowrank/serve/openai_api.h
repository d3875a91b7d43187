// OpenAI API shapes for the HTTP server (http_server.h): request bodies → engine requests, engine
// results → response bodies, and the Prometheus text of /metrics. Pure functions, no sockets, so
// that every rule can be unit-tested. Follows the OpenAI API reference for `POST /v1/completions`
// (legacy completions), `POST /v1/chat/completions`, `GET /v1/models` and the error object
// {"error": {"message", "type", "param", "code"}}, with vLLM's extensions where OpenAI has none
// (top_k, repetition_penalty, ignore_eos, min_tokens, the adapter list's "parent", /tokenize,
// /detokenize, /version). Log-probabilities follow vLLM's shapes (vllm-project/vllm,
// vllm/entrypoints/openai/completion/serving.py _create_completion_logprobs and
// chat_completion/serving.py _create_chat_logprobs): each token as its text decoded alone,
// logprobs clamped below at -9999 (JSON has no -inf), the completions' top_logprobs a
// {token: logprob} object with the chosen token beside the top k, text_offset the running sum of
// the tokens' lengths in characters; chat's `bytes` are the UTF-8 bytes of that text. Deviation:
// chat's top_logprobs are the k most likely, most likely first (OpenAI), where vLLM puts the
// chosen token first.
// docs/serving.md lists the fields; deviations:
//   - chat prompts use a fixed template (ChatTemplate), not the model's Jinja chat_template;
//   - suffix, tools, guided_grammar and best_of != n are refused with 400 rather than ignored, so
//     that a client never gets silently different output;
//   - structured output: response_format json_object / json_schema (OpenAI) and vLLM's
//     guided_json, guided_regex, guided_choice, guided_whitespace_pattern, at most one (400
//     naming the second), compiled to a token constraint (token_constraint.h; a schema or regex
//     that cannot be compiled → 400 naming the field and the construct); ignore_eos with one →
//     400 (the constraint ends the output with eos);
//   - chat's max_tokens defaults to the rest of the context (as vLLM), completions' to 16 (as
//     OpenAI).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/serve/chat_template.h"
#include "lowrank/serve/engine.h"

namespace lowrank::data {
class Tokenizer;
}

namespace lowrank::serve {

// A request the API refuses, with its HTTP status and OpenAI's error fields. `type` follows the
// status (invalid_request_error for 4xx, server_error for 5xx; authentication_error,
// rate_limit_error, not_found_error where OpenAI's own responses use them).
class ApiError : public Error {
 public:
  ApiError(int status, const std::string& message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& param() const { return param_; }  // the request field at fault; empty = none
  const std::string& code() const { return code_; }    // e.g. "model_not_found"; empty = none
  std::string_view type() const;

 private:
  int status_;
  std::string param_;
  std::string code_;
};

// The ApiError an exception maps to at the HTTP edge: ApiError as is, InvalidArgument → 400,
// NotFound → 404, Unsupported → 400, anything else → 500 (message kept for lowrank::Error, a
// generic one otherwise).
ApiError to_api_error(std::exception_ptr error);

// {"error": {"message", "type", "param", "code"}} (param and code null when empty).
OrderedJson error_body(const ApiError& error);

// Limits and model facts the parsers check against.
struct ApiLimits {
  int64_t context = 0;            // the model's max_position_embeddings (0: unchecked)
  int64_t vocab_size = 0;         // token ids must be below (0: unchecked)
  int64_t max_prompt_tokens = 0;  // 0: the context
  int64_t max_choices = 64;       // prompts × n per request
};

// The limits of `engine`'s model (context, vocabulary) with the server's own.
ApiLimits api_limits(const Engine& engine, int64_t max_prompt_tokens, int64_t max_choices);

// One parsed /v1/completions or /v1/chat/completions request.
struct GenerateCall {
  std::string model;                          // as requested (empty: the base model)
  std::vector<std::vector<int64_t>> prompts;  // completions: one per prompt; chat: exactly one
  SamplingParams sampling;                    // shared by every choice; seed + i for choice i of n
  int64_t n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  bool chat = false;
  // Log-probabilities: completions' integer `logprobs`, or chat's `logprobs: true` (its
  // top_logprobs in sampling.logprobs); also in sampling.logprobs (sampler.h).
  bool logprobs = false;
  bool echo = false;                      // completions: the prompt before the completion
  std::vector<std::string> prompt_texts;  // with echo: each prompt's text
  std::string user;                       // OpenAI's end-user id: logged, not otherwise used
};

// Parse and validate a request body (a JSON object). Throw ApiError 400 naming the field (param)
// for a missing, mistyped or out-of-range one, an unsupported option, an empty prompt or one over
// the limits. Text is tokenized with `tokenizer` (completions: with its special tokens, as
// `lowrank generate --prompt`; chat with a template: without, the template carries them).
GenerateCall parse_completion_request(const Json& body, const data::Tokenizer& tokenizer,
                                      const ApiLimits& limits);
GenerateCall parse_chat_request(const Json& body, const data::Tokenizer& tokenizer,
                                ChatTemplate chat_template, const ApiLimits& limits);

// "stop" or "length" (OpenAI's finish_reason); other reasons have no OpenAI name ("cancelled").
std::string_view api_finish_reason(FinishReason reason);

// One finished choice.
struct Choice {
  int64_t index = 0;
  std::string text;
  FinishReason finish = FinishReason::kStop;
  OrderedJson logprobs;  // null unless asked for (completion_logprobs / chat_logprobs)
};

// A token's text in the logprobs objects: the token decoded alone.
using TokenText = std::function<std::string(int64_t)>;
// Completions' logprobs object {"text_offset", "token_logprobs", "tokens", "top_logprobs"} of
// `entries`, after `leading` (an echoed prompt's first token, reported with null logprobs), its
// offsets starting at `text_offset` (advanced past them).
OrderedJson completion_logprobs(std::optional<int64_t> leading, std::span<const LogprobEntry> entries,
                                int64_t& text_offset, const TokenText& token_text);
// Chat's logprobs object {"content": [{"token", "logprob", "bytes", "top_logprobs"}]}.
OrderedJson chat_logprobs(std::span<const LogprobEntry> entries, const TokenText& token_text);
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};
OrderedJson usage_json(const Usage& usage);

// Response bodies. `id` is the response id ("cmpl-…" / "chatcmpl-…"), `created` Unix seconds.
OrderedJson completion_response(const std::string& id, int64_t created, const std::string& model,
                                std::span<const Choice> choices, const Usage& usage);
OrderedJson chat_response(const std::string& id, int64_t created, const std::string& model,
                          std::span<const Choice> choices, const Usage& usage);
// Streaming chunks. `finish` set: the choice's last chunk (finish_reason, no text for chat).
// `role_only`: chat's first chunk of a choice (delta {"role": "assistant", "content": ""}).
OrderedJson completion_chunk(const std::string& id, int64_t created, const std::string& model, int64_t index,
                             const std::string& text, std::optional<FinishReason> finish,
                             OrderedJson logprobs = nullptr);
OrderedJson chat_chunk(const std::string& id, int64_t created, const std::string& model, int64_t index,
                       const std::string& text, std::optional<FinishReason> finish, bool role_only = false,
                       OrderedJson logprobs = nullptr);

// vLLM's POST /tokenize ({"prompt"} or {"messages"}; add_special_tokens, return_token_strs) →
// {"count", "max_model_len", "tokens", "token_strs"}, and POST /detokenize ({"tokens"}) →
// {"prompt"}. Throws ApiError 400 naming the field.
OrderedJson tokenize_response(const Json& body, const data::Tokenizer& tokenizer, ChatTemplate chat_template,
                              const ApiLimits& limits);
OrderedJson detokenize_response(const Json& body, const data::Tokenizer& tokenizer, const ApiLimits& limits);
// The last chunk of a stream with stream_options.include_usage: no choices, the usage.
OrderedJson usage_chunk(const std::string& id, int64_t created, const std::string& model, bool chat,
                        const Usage& usage);

// GET /v1/models: the base model, then every adapter with the base as "parent".
OrderedJson model_json(const std::string& id, int64_t created, const std::string& parent, int64_t context);
OrderedJson models_response(const std::string& base, int64_t created, int64_t context,
                            std::span<const AdapterInfo> adapters);

// JSON text for a response (invalid UTF-8 replaced rather than thrown on: a response must go out).
std::string to_text(const OrderedJson& value);

// HTTP-level counters kept by the server, reported beside the engine's.
struct HttpCounters {
  std::map<int, int64_t> responses;  // by status
  int64_t disconnects = 0;           // requests cancelled because their client went away
};

// /metrics: the Prometheus text exposition format (version 0.0.4), every family prefixed
// "lowrank_": queue length, running batch, pool pages, adapters, tokens/s, the TTFT histogram
// and the request counters.
std::string prometheus_metrics(const EngineStats& stats, const HttpCounters& http);

}  // namespace lowrank::serve
