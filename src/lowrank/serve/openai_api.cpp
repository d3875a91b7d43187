// OpenAI API shapes: request parsing, response building, Prometheus text (see openai_api.h).
#include "lowrank/serve/openai_api.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <sstream>

#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/model.h"
#include "lowrank/serve/json_schema_regex.h"
#include "lowrank/serve/token_constraint.h"

namespace lowrank::serve {
namespace {

[[noreturn]] void bad_field(std::string_view param, const std::string& message) {
  throw ApiError(400, message, std::string(param));
}

// The value of `key`, or null when it is absent or JSON null (OpenAI treats both as "not given").
const Json* field(const Json& body, std::string_view key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double get_number(const Json& body, std::string_view key, double fallback) {
  const Json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_number()) bad_field(key, str("'", key, "' must be a number, got ", v->type_name()));
  const double x = v->get<double>();
  if (!std::isfinite(x)) bad_field(key, str("'", key, "' must be finite"));
  return x;
}

int64_t get_int(const Json& body, std::string_view key, int64_t fallback) {
  const Json* v = field(body, key);
  if (!v) return fallback;
  // 2.0 is accepted as 2 (some clients send integers as floats); 2.5 is not.
  if (v->is_number_float()) {
    const double x = v->get<double>();
    if (x != std::floor(x) || std::abs(x) > 9.0e15)
      bad_field(key, str("'", key, "' must be an integer, got ", v->dump()));
    return static_cast<int64_t>(x);
  }
  if (!v->is_number_integer()) bad_field(key, str("'", key, "' must be an integer, got ", v->type_name()));
  if (v->is_number_unsigned() &&
      v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad_field(key, str("'", key, "' is out of range"));
  return v->get<int64_t>();
}

bool get_bool(const Json& body, std::string_view key, bool fallback) {
  const Json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_boolean()) bad_field(key, str("'", key, "' must be a boolean, got ", v->type_name()));
  return v->get<bool>();
}

// Options this server does not implement: refused when set to anything but their neutral value,
// so that a client never silently gets output it did not ask for.
void refuse_unsupported(const Json& body) {
  for (const char* key : {"tools", "functions", "suffix"}) {
    const Json* v = field(body, key);
    if (v && !v->empty() && !(v->is_string() && v->get<std::string>().empty()) &&
        !(v->is_number() && v->get<double>() == 0))
      bad_field(key, str("'", key, "' is not supported"));
  }
}

// Structured output (token_constraint.h): OpenAI's response_format {"type": "json_object"} or
// {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}, and vLLM's guided_json
// (a schema, as an object or JSON text), guided_regex (a string), guided_choice (a list of
// strings: their alternation) with guided_whitespace_pattern, at most one of them. The compiled
// constraint (shared through the constraint cache) goes into sampling.constraint.
void parse_structured_output(const Json& body, const data::Tokenizer& tokenizer, GenerateCall& call) {
  struct Spec {
    ConstraintKind kind;
    std::string param;  // the field a compile error names
    std::string text;   // the cache key (with the whitespace pattern)
    std::function<std::string()> regex;
  };
  std::vector<Spec> specs;
  std::string ws(kJsonWhitespace);
  if (const Json* w = field(body, "guided_whitespace_pattern")) {
    if (!w->is_string())
      bad_field("guided_whitespace_pattern", "'guided_whitespace_pattern' must be a string");
    ws = w->get<std::string>();
  }
  auto schema_spec = [&](const Json& schema, const std::string& param) {
    if (!schema.is_object()) bad_field(param, str("'", param, "' must be a JSON schema object"));
    specs.push_back({ConstraintKind::kJsonSchema, param, ws + "\n" + schema.dump(),
                     [schema, param, ws] { return json_schema_regex(schema, param, ws); }});
  };
  if (const Json* v = field(body, "response_format")) {
    if (!v->is_object()) bad_field("response_format", "'response_format' must be an object");
    const Json* type = field(*v, "type");
    if (!type || !type->is_string())
      bad_field("response_format.type", "'response_format.type' must be text, json_object or json_schema");
    const std::string t = type->get<std::string>();
    if (t == "json_object") {
      specs.push_back(
          {ConstraintKind::kJsonObject, "response_format", ws, [ws] { return json_object_regex(ws); }});
    } else if (t == "json_schema") {
      const Json* js = field(*v, "json_schema");
      if (!js || !js->is_object())
        bad_field("response_format.json_schema", "'response_format.json_schema' must be an object");
      const Json* name = field(*js, "name");
      if (!name || !name->is_string())
        bad_field("response_format.json_schema.name", "'response_format.json_schema.name' must be a string");
      if (const Json* strict = field(*js, "strict"); strict && !strict->is_boolean())
        bad_field("response_format.json_schema.strict",
                  "'response_format.json_schema.strict' must be a boolean");
      const Json* schema = field(*js, "schema");
      if (!schema)
        bad_field("response_format.json_schema.schema", "'response_format.json_schema.schema' is required");
      schema_spec(*schema, "response_format.json_schema.schema");
    } else if (t != "text") {
      bad_field("response_format.type",
                str("'response_format.type' must be text, json_object or json_schema, got \"", t, "\""));
    }
  }
  if (const Json* v = field(body, "guided_json")) {
    if (v->is_string()) {
      Json schema;
      try {
        schema = Json::parse(v->get<std::string>());
      } catch (const std::exception&) {
        bad_field("guided_json", "'guided_json' is not valid JSON");
      }
      schema_spec(schema, "guided_json");
    } else {
      schema_spec(*v, "guided_json");
    }
  }
  if (const Json* v = field(body, "guided_regex")) {
    if (!v->is_string()) bad_field("guided_regex", "'guided_regex' must be a string");
    const std::string pattern = v->get<std::string>();
    specs.push_back({ConstraintKind::kRegex, "guided_regex", pattern, [pattern] { return pattern; }});
  }
  if (const Json* v = field(body, "guided_choice")) {
    if (!v->is_array() || v->empty())
      bad_field("guided_choice", "'guided_choice' must be a non-empty list of strings");
    std::string regex;
    for (const Json& c : *v) {
      if (!c.is_string()) bad_field("guided_choice", "'guided_choice' must be a non-empty list of strings");
      regex += (regex.empty() ? "(" : "|") + regex_escape(c.get<std::string>());
    }
    regex += ")";
    specs.push_back({ConstraintKind::kChoice, "guided_choice", v->dump(), [regex] { return regex; }});
  }
  if (field(body, "guided_grammar"))
    bad_field("guided_grammar", "'guided_grammar' is not supported (use guided_regex or a JSON schema)");
  if (specs.empty()) return;
  if (specs.size() > 1)
    bad_field(specs[1].param == "response_format.json_schema.schema" ? "response_format" : specs[1].param,
              "only one of response_format (json_object, json_schema), guided_json, guided_regex and "
              "guided_choice may be given");
  const Spec& spec = specs[0];
  if (call.sampling.ignore_eos)
    bad_field("ignore_eos",
              "'ignore_eos' cannot be combined with structured output (the output ends with eos)");
  std::shared_ptr<const TokenVocabulary> vocabulary;
  try {
    vocabulary = TokenVocabulary::of(tokenizer);
  } catch (const Unsupported& e) {
    bad_field(spec.param, e.what());
  }
  try {
    call.sampling.constraint = constraint_cache().get(spec.kind, spec.text, vocabulary, spec.regex);
  } catch (const RegexError& e) {
    const std::string message = e.what();
    bad_field(spec.param, message.starts_with(spec.param) ? message : str(spec.param, ": ", message));
  }
}

std::vector<std::string> parse_stop(const Json& body) {
  const Json* v = field(body, "stop");
  if (!v) return {};
  std::vector<std::string> stop;
  if (v->is_string()) {
    stop.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const Json& s : *v) {
      if (!s.is_string()) bad_field("stop", "'stop' must be a string or a list of strings");
      stop.push_back(s.get<std::string>());
    }
  } else {
    bad_field("stop", "'stop' must be a string or a list of strings");
  }
  return stop;  // empty strings are refused with the other bounds (sampling_violation)
}

// logit_bias: {"token id": bias}; the keys are token ids written as strings (JSON's object keys).
// The ids are checked against the vocabulary in check_logit_bias, the biases in sampling_violation.
std::vector<std::pair<int64_t, double>> parse_logit_bias(const Json& body) {
  const Json* v = field(body, "logit_bias");
  if (!v) return {};
  if (!v->is_object()) bad_field("logit_bias", "'logit_bias' must be an object of token id → bias");
  std::vector<std::pair<int64_t, double>> bias;
  for (const auto& [key, value] : v->items()) {
    int64_t id = -1;
    size_t used = 0;
    try {
      id = std::stoll(key, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != key.size())
      bad_field("logit_bias", str("'logit_bias' keys must be token ids, got \"", key, "\""));
    if (!value.is_number())
      bad_field("logit_bias",
                str("'logit_bias' values must be numbers, got ", value.type_name(), " for token ", key));
    bias.emplace_back(id, value.get<double>());
  }
  return bias;
}

void check_logit_bias(const GenerateCall& call, const ApiLimits& limits) {
  for (const auto& [id, bias] : call.sampling.logit_bias)
    if (id < 0 || (limits.vocab_size > 0 && id >= limits.vocab_size))
      bad_field("logit_bias", str("'logit_bias': token id ", id, " is outside the vocabulary [0, ",
                                  limits.vocab_size, ")"));
}

// The top-k count of a logprobs field: an integer in [0, kMaxLogprobs].
int64_t get_logprobs_count(const Json& body, std::string_view key) {
  const int64_t k = get_int(body, key, 0);
  if (k < 0 || k > kMaxLogprobs)
    bad_field(key, str("'", key, "' must be in [0, ", kMaxLogprobs, "], got ", k));
  return k;
}

// Number of characters (code points) of UTF-8 text, as Python's len() counts them.
int64_t characters(std::string_view text) {
  int64_t n = 0;
  for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// vLLM's floor for a logprob in JSON (-inf has no JSON form).
double clamped(float logprob) {
  return std::max(static_cast<double>(logprob), -9999.0);
}

OrderedJson utf8_bytes(const std::string& text) {
  OrderedJson out = OrderedJson::array();
  for (char c : text) out.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return out;
}

// The fields completions and chat share (all but the prompt and max_tokens).
void parse_common(const Json& body, GenerateCall& call) {
  refuse_unsupported(body);
  if (const Json* v = field(body, "model")) {
    if (!v->is_string()) bad_field("model", "'model' must be a string");
    call.model = v->get<std::string>();
  }
  SamplingParams& s = call.sampling;
  s.temperature = get_number(body, "temperature", 1.0);
  s.top_p = get_number(body, "top_p", 1.0);
  s.top_k = get_int(body, "top_k", 0);
  if (s.top_k == -1) s.top_k = 0;  // vLLM's "off"
  s.repetition_penalty = get_number(body, "repetition_penalty", 1.0);
  if (field(body, "seed")) s.seed = static_cast<uint64_t>(get_int(body, "seed", 0));
  s.stop = parse_stop(body);
  s.ignore_eos = get_bool(body, "ignore_eos", false);
  s.presence_penalty = get_number(body, "presence_penalty", 0.0);
  s.frequency_penalty = get_number(body, "frequency_penalty", 0.0);
  s.min_tokens = get_int(body, "min_tokens", 0);
  s.logit_bias = parse_logit_bias(body);
  if (const Json* v = field(body, "user")) {
    if (!v->is_string()) bad_field("user", str("'user' must be a string, got ", v->type_name()));
    call.user = v->get<std::string>();
  }
  call.n = get_int(body, "n", 1);
  if (call.n < 1) bad_field("n", str("'n' must be at least 1, got ", call.n));
  if (field(body, "best_of") && get_int(body, "best_of", 1) != call.n)
    bad_field("best_of", "'best_of' other than n is not supported");
  call.stream = get_bool(body, "stream", false);
  if (const Json* v = field(body, "stream_options")) {
    if (!v->is_object()) bad_field("stream_options", "'stream_options' must be an object");
    if (!call.stream) bad_field("stream_options", "'stream_options' needs 'stream': true");
    call.include_usage = get_bool(*v, "include_usage", false);
  }
}

// Checks a tokenized prompt against the limits; `param` names the field it came from.
void check_prompt(const std::vector<int64_t>& ids, std::string_view param, const ApiLimits& limits) {
  if (ids.empty()) bad_field(param, str("'", param, "' is empty (no tokens)"));
  const int64_t limit = limits.max_prompt_tokens > 0 ? limits.max_prompt_tokens : limits.context;
  if (limit > 0 && static_cast<int64_t>(ids.size()) > limit)
    bad_field(param, str("'", param, "' has ", ids.size(), " tokens, over the limit of ", limit));
  if (limits.vocab_size > 0)
    for (int64_t id : ids)
      if (id < 0 || id >= limits.vocab_size)
        bad_field(param, str("'", param, "': token id ", id, " is outside the vocabulary [0, ",
                             limits.vocab_size, ")"));
}

// max_tokens: a given value must be >= 1 and fit the context with the longest prompt; absent,
// `fallback` (0: the rest of the context after the longest prompt).
void set_max_tokens(const Json& body, std::string_view key, int64_t fallback, const ApiLimits& limits,
                    GenerateCall& call) {
  int64_t longest = 0;
  for (const auto& p : call.prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  const bool given = field(body, key) != nullptr;
  int64_t max_tokens = get_int(body, key, fallback);
  if (!given && max_tokens == 0) {
    max_tokens = limits.context - longest;
    if (max_tokens < 1)
      bad_field("messages", str("the prompt (", longest, " tokens) fills the model's context of ",
                                limits.context, " tokens"));
  }
  if (max_tokens < 1) bad_field(key, str("'", key, "' must be at least 1, got ", max_tokens));
  if (limits.context > 0 && longest + max_tokens > limits.context)
    bad_field(key, str("the prompt (", longest, " tokens) plus '", key, "' (", max_tokens,
                       ") exceed the model's context of ", limits.context, " tokens"));
  call.sampling.max_new_tokens = max_tokens;
}

void check_choices(const GenerateCall& call, const ApiLimits& limits);

// The last checks of a parsed call: the sampling bounds (the engine's too, engine.h: stated once,
// checked here, asserted there), logit_bias's ids, the number of choices.
void check_call(const GenerateCall& call, const ApiLimits& limits) {
  if (const auto v = sampling_violation(call.sampling)) bad_field(v->param, v->message);
  check_logit_bias(call, limits);
  check_choices(call, limits);
}

void check_choices(const GenerateCall& call, const ApiLimits& limits) {
  const int64_t choices = static_cast<int64_t>(call.prompts.size()) * call.n;
  if (choices > limits.max_choices)
    bad_field("n", str("prompts × n = ", choices, " choices, over the limit of ", limits.max_choices));
}

std::vector<int64_t> encode(const data::Tokenizer& tokenizer, const std::string& text, bool special,
                            std::string_view param) {
  try {
    std::vector<int32_t> ids = tokenizer.encode(text, special);
    return {ids.begin(), ids.end()};
  } catch (const InvalidArgument& e) {  // invalid UTF-8
    bad_field(param, str("'", param, "': ", e.what()));
  }
}

std::vector<int64_t> token_ids(const Json& list, std::string_view param) {
  std::vector<int64_t> ids;
  ids.reserve(list.size());
  for (const Json& id : list) {
    if (!id.is_number_integer()) bad_field(param, str("'", param, "' mixes token ids with ", id.type_name()));
    ids.push_back(id.get<int64_t>());
  }
  return ids;
}

std::string message_content(const Json& message, size_t index) {
  const std::string param = str("messages[", index, "].content");
  const Json* content = field(message, "content");
  if (!content) return {};  // an assistant turn with no text
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) bad_field(param, str("'", param, "' must be a string or a list of text parts"));
  std::string text;
  for (const Json& part : *content) {
    if (!part.is_object() || json_get_or<std::string>(part, "type", "", param) != "text" ||
        !part.contains("text") || !part["text"].is_string())
      bad_field(param, str("'", param, "': only {\"type\": \"text\", \"text\": ...} parts are supported"));
    text += part["text"].get<std::string>();
  }
  return text;
}

const char* type_of_status(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string escape_label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

ApiError::ApiError(int status, const std::string& message, std::string param, std::string code)
    : Error(status < 500 ? ErrorKind::kInvalidArgument : ErrorKind::kInternal, message),
      status_(status),
      param_(std::move(param)),
      code_(std::move(code)) {}

std::string_view ApiError::type() const {
  return type_of_status(status_);
}

ApiError to_api_error(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const ApiError& e) {
    return e;
  } catch (const Error& e) {
    switch (e.kind()) {
      case ErrorKind::kInvalidArgument:
      case ErrorKind::kUnsupported:
        return ApiError(400, e.what());
      case ErrorKind::kNotFound:
        return ApiError(404, e.what());
      default:
        return ApiError(500, e.what());
    }
  } catch (const std::exception& e) {
    // Internal details (libtorch traces) stay in the server's log, not in the response.
    return ApiError(500, "internal server error");
  } catch (...) {
    return ApiError(500, "internal server error");
  }
}

OrderedJson error_body(const ApiError& error) {
  auto or_null = [](const std::string& s) { return s.empty() ? OrderedJson(nullptr) : OrderedJson(s); };
  return {{"error",
           {{"message", error.what()},
            {"type", error.type()},
            {"param", or_null(error.param())},
            {"code", or_null(error.code())}}}};
}

ApiLimits api_limits(const Engine& engine, int64_t max_prompt_tokens, int64_t max_choices) {
  const nn::ModelConfig& config = engine.model().config();
  ApiLimits limits;
  limits.context = config.max_position_embeddings;
  limits.vocab_size = config.vocab_size;
  limits.max_prompt_tokens = max_prompt_tokens;
  limits.max_choices = max_choices;
  return limits;
}

GenerateCall parse_completion_request(const Json& body, const data::Tokenizer& tokenizer,
                                      const ApiLimits& limits) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  GenerateCall call;
  parse_common(body, call);
  const Json* prompt = field(body, "prompt");
  if (!prompt) bad_field("prompt", "'prompt' is required");
  // A string, a list of strings, a list of token ids, or a list of lists of token ids.
  if (prompt->is_string()) {
    call.prompts.push_back(encode(tokenizer, prompt->get<std::string>(), true, "prompt"));
  } else if (prompt->is_array() && !prompt->empty()) {
    const Json& first = prompt->front();
    if (first.is_number_integer()) {
      call.prompts.push_back(token_ids(*prompt, "prompt"));
    } else {
      for (const Json& p : *prompt) {
        if (p.is_string())
          call.prompts.push_back(encode(tokenizer, p.get<std::string>(), true, "prompt"));
        else if (p.is_array())
          call.prompts.push_back(token_ids(p, "prompt"));
        else
          bad_field("prompt", "'prompt' must be a string, a list of strings or a list of token ids");
      }
    }
  } else {
    bad_field("prompt", "'prompt' must be a non-empty string, list of strings or list of token ids");
  }
  for (const auto& ids : call.prompts) check_prompt(ids, "prompt", limits);
  set_max_tokens(body, "max_tokens", 16, limits, call);
  parse_structured_output(body, tokenizer, call);
  // logprobs: an integer, the alternatives per token (vLLM's CompletionRequest); echo returns the
  // prompt first, with its logprobs when logprobs is given (vLLM: prompt_logprobs = logprobs).
  if (field(body, "logprobs")) {
    call.logprobs = true;
    call.sampling.logprobs = get_logprobs_count(body, "logprobs");
  }
  call.echo = get_bool(body, "echo", false);
  if (call.echo) {
    if (call.logprobs) call.sampling.prompt_logprobs = call.sampling.logprobs;
    if (prompt->is_string()) {
      call.prompt_texts.push_back(prompt->get<std::string>());
    } else {
      for (size_t i = 0; i < call.prompts.size(); ++i) {
        const Json& p = prompt->front().is_number_integer() ? *prompt : (*prompt)[i];
        if (p.is_string()) {
          call.prompt_texts.push_back(p.get<std::string>());
        } else {
          const std::vector<int32_t> ids(call.prompts[i].begin(), call.prompts[i].end());
          call.prompt_texts.push_back(tokenizer.decode(ids));
        }
      }
    }
  }
  check_call(call, limits);
  return call;
}

GenerateCall parse_chat_request(const Json& body, const data::Tokenizer& tokenizer,
                                ChatTemplate chat_template, const ApiLimits& limits) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  GenerateCall call;
  call.chat = true;
  parse_common(body, call);
  const Json* messages = field(body, "messages");
  if (!messages || !messages->is_array() || messages->empty())
    bad_field("messages", "'messages' must be a non-empty list of messages");
  std::vector<ChatMessage> turns;
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    const std::string param = str("messages[", i, "]");
    if (!m.is_object()) bad_field(param, str("'", param, "' must be an object"));
    const Json* role = field(m, "role");
    if (!role || !role->is_string()) bad_field(param + ".role", str("'", param, ".role' must be a string"));
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";  // OpenAI's newer name for system instructions
    if (r != "system" && r != "user" && r != "assistant")
      bad_field(param + ".role",
                str("'", param, ".role' must be system, user or assistant, got \"", r, "\""));
    turns.push_back({std::move(r), message_content(m, i)});
  }
  const std::string text = apply_chat_template(turns, chat_template);
  // The plain template has no special tokens of its own: add the tokenizer's (a bos), as for a
  // completion; the others write theirs.
  call.prompts.push_back(encode(tokenizer, text, chat_template == ChatTemplate::kPlain, "messages"));
  check_prompt(call.prompts[0], "messages", limits);
  // max_completion_tokens is OpenAI's newer name; max_tokens is still accepted.
  const char* key = field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  set_max_tokens(body, key, 0, limits, call);
  parse_structured_output(body, tokenizer, call);
  // logprobs: a boolean; top_logprobs: the alternatives per token, only with logprobs (OpenAI).
  call.logprobs = get_bool(body, "logprobs", false);
  if (field(body, "top_logprobs") && !call.logprobs)
    bad_field("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  if (call.logprobs) call.sampling.logprobs = get_logprobs_count(body, "top_logprobs");
  if (field(body, "echo")) bad_field("echo", "'echo' is a completions parameter, not a chat one");
  check_call(call, limits);
  return call;
}

std::string_view api_finish_reason(FinishReason reason) {
  // A request the server ended (a shutdown's drain ran out) is reported as vLLM reports an
  // aborted one (FinishReason.ABORT); the others are OpenAI's "stop" and "length".
  if (reason == FinishReason::kCancelled) return "abort";
  return finish_reason_name(reason);  // OpenAI's "stop" and "length" are the scheduler's names
}

OrderedJson usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

OrderedJson completion_logprobs(std::optional<int64_t> leading, std::span<const LogprobEntry> entries,
                                int64_t& text_offset, const TokenText& token_text) {
  OrderedJson offsets = OrderedJson::array(), logprobs = OrderedJson::array(), tokens = OrderedJson::array(),
              tops = OrderedJson::array();
  auto token = [&](int64_t id) {
    std::string text = token_text(id);
    offsets.push_back(text_offset);
    text_offset += characters(text);
    tokens.push_back(text);
  };
  if (leading) {
    token(*leading);
    logprobs.push_back(nullptr);
    tops.push_back(nullptr);
  }
  for (const LogprobEntry& e : entries) {
    token(e.token);
    logprobs.push_back(clamped(e.logprob));
    // The chosen token first, then the top k (vLLM's order); two tokens of the same text share
    // one key, at the first one's place with the later one's value (vLLM's Python dict).
    OrderedJson top = OrderedJson::object();
    top[token_text(e.token)] = clamped(e.logprob);
    for (const TokenLogprob& t : e.top)
      if (t.token != e.token) top[token_text(t.token)] = clamped(t.logprob);
    tops.push_back(std::move(top));
  }
  return {{"text_offset", std::move(offsets)},
          {"token_logprobs", std::move(logprobs)},
          {"tokens", std::move(tokens)},
          {"top_logprobs", std::move(tops)}};
}

OrderedJson chat_logprobs(std::span<const LogprobEntry> entries, const TokenText& token_text) {
  OrderedJson content = OrderedJson::array();
  auto item = [&](int64_t id, float logprob) {
    std::string text = token_text(id);
    OrderedJson bytes = utf8_bytes(text);
    return OrderedJson{
        {"token", std::move(text)}, {"logprob", clamped(logprob)}, {"bytes", std::move(bytes)}};
  };
  for (const LogprobEntry& e : entries) {
    OrderedJson entry = item(e.token, e.logprob);
    OrderedJson top = OrderedJson::array();
    for (const TokenLogprob& t : e.top) top.push_back(item(t.token, t.logprob));
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  return {{"content", std::move(content)}};
}

OrderedJson completion_response(const std::string& id, int64_t created, const std::string& model,
                                std::span<const Choice> choices, const Usage& usage) {
  OrderedJson list = OrderedJson::array();
  for (const Choice& c : choices)
    list.push_back({{"index", c.index},
                    {"text", c.text},
                    {"logprobs", c.logprobs},
                    {"finish_reason", api_finish_reason(c.finish)}});
  return {{"id", id},       {"object", "text_completion"}, {"created", created},
          {"model", model}, {"choices", std::move(list)},  {"usage", usage_json(usage)}};
}

OrderedJson chat_response(const std::string& id, int64_t created, const std::string& model,
                          std::span<const Choice> choices, const Usage& usage) {
  OrderedJson list = OrderedJson::array();
  for (const Choice& c : choices)
    list.push_back({{"index", c.index},
                    {"message", {{"role", "assistant"}, {"content", c.text}}},
                    {"logprobs", c.logprobs},
                    {"finish_reason", api_finish_reason(c.finish)}});
  return {{"id", id},       {"object", "chat.completion"}, {"created", created},
          {"model", model}, {"choices", std::move(list)},  {"usage", usage_json(usage)}};
}

OrderedJson completion_chunk(const std::string& id, int64_t created, const std::string& model, int64_t index,
                             const std::string& text, std::optional<FinishReason> finish,
                             OrderedJson logprobs) {
  OrderedJson choice{
      {"index", index},
      {"text", text},
      {"logprobs", std::move(logprobs)},
      {"finish_reason", finish ? OrderedJson(api_finish_reason(*finish)) : OrderedJson(nullptr)}};
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", OrderedJson::array({std::move(choice)})}};
}

OrderedJson chat_chunk(const std::string& id, int64_t created, const std::string& model, int64_t index,
                       const std::string& text, std::optional<FinishReason> finish, bool role_only,
                       OrderedJson logprobs) {
  OrderedJson delta = OrderedJson::object();
  if (role_only)
    delta = {{"role", "assistant"}, {"content", ""}};
  else if (!finish)
    delta = {{"content", text}};
  OrderedJson choice{
      {"index", index},
      {"delta", std::move(delta)},
      {"logprobs", std::move(logprobs)},
      {"finish_reason", finish ? OrderedJson(api_finish_reason(*finish)) : OrderedJson(nullptr)}};
  return {{"id", id},
          {"object", "chat.completion.chunk"},
          {"created", created},
          {"model", model},
          {"choices", OrderedJson::array({std::move(choice)})}};
}

OrderedJson usage_chunk(const std::string& id, int64_t created, const std::string& model, bool chat,
                        const Usage& usage) {
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", OrderedJson::array()},
          {"usage", usage_json(usage)}};
}

OrderedJson tokenize_response(const Json& body, const data::Tokenizer& tokenizer, ChatTemplate chat_template,
                              const ApiLimits& limits) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  std::vector<int64_t> ids;
  const bool chat = field(body, "messages") != nullptr;
  if (chat == (field(body, "prompt") != nullptr))
    bad_field("prompt", "exactly one of 'prompt' and 'messages' is required");
  if (chat) {
    // As a chat request's prompt: the template, without the tokenizer's special tokens unless asked.
    Json request = body;
    request.erase("add_special_tokens");
    request.erase("return_token_strs");
    request.erase("add_generation_prompt");
    request["max_tokens"] = 1;
    ApiLimits unchecked = limits;
    unchecked.context = 0;
    unchecked.max_prompt_tokens = 0;
    GenerateCall call = parse_chat_request(request, tokenizer, chat_template, unchecked);
    ids = std::move(call.prompts[0]);
  } else {
    const Json* prompt = field(body, "prompt");
    if (!prompt->is_string()) bad_field("prompt", "'prompt' must be a string");
    ids = encode(tokenizer, prompt->get<std::string>(), get_bool(body, "add_special_tokens", true), "prompt");
  }
  const bool strs = get_bool(body, "return_token_strs", false);
  OrderedJson token_strs = nullptr;
  if (strs) {
    token_strs = OrderedJson::array();
    for (int64_t id : ids) token_strs.push_back(tokenizer.id_to_token(static_cast<int32_t>(id)));
  }
  return {{"count", ids.size()},
          {"max_model_len", limits.context},
          {"tokens", ids},
          {"token_strs", std::move(token_strs)}};
}

OrderedJson detokenize_response(const Json& body, const data::Tokenizer& tokenizer, const ApiLimits& limits) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  const Json* tokens = field(body, "tokens");
  if (!tokens || !tokens->is_array()) bad_field("tokens", "'tokens' must be a list of token ids");
  std::vector<int32_t> ids;
  for (int64_t id : token_ids(*tokens, "tokens")) {
    const int64_t vocab = limits.vocab_size > 0 ? limits.vocab_size : tokenizer.vocab_size();
    if (id < 0 || id >= vocab || id >= tokenizer.vocab_size())
      bad_field("tokens", str("'tokens': token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    ids.push_back(static_cast<int32_t>(id));
  }
  try {
    return {{"prompt", tokenizer.decode(ids)}};
  } catch (const InvalidArgument& e) {  // an id inside the range that names no token
    bad_field("tokens", str("'tokens': ", e.what()));
  }
}

OrderedJson model_json(const std::string& id, int64_t created, const std::string& parent, int64_t context) {
  OrderedJson m{{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "lowrank"}};
  m["root"] = parent.empty() ? id : parent;
  m["parent"] = parent.empty() ? OrderedJson(nullptr) : OrderedJson(parent);
  if (context > 0) m["max_model_len"] = context;
  return m;
}

OrderedJson models_response(const std::string& base, int64_t created, int64_t context,
                            std::span<const AdapterInfo> adapters) {
  OrderedJson data = OrderedJson::array();
  data.push_back(model_json(base, created, "", context));
  for (const AdapterInfo& a : adapters) data.push_back(model_json(a.name, created, base, context));
  return {{"object", "list"}, {"data", std::move(data)}};
}

std::string to_text(const OrderedJson& value) {
  return value.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

std::string prometheus_metrics(const EngineStats& stats, const HttpCounters& http) {
  std::ostringstream out;
  out.precision(17);
  auto family = [&](std::string_view name, std::string_view type, std::string_view help) {
    out << "# HELP lowrank_" << name << " " << help << "\n# TYPE lowrank_" << name << " " << type << "\n";
  };
  auto sample = [&](std::string_view name, auto value, std::string_view labels = {}) {
    out << "lowrank_" << name;
    if (!labels.empty()) out << "{" << labels << "}";
    out << " " << value << "\n";
  };
  auto gauge = [&](std::string_view name, auto value, std::string_view help) {
    family(name, "gauge", help);
    sample(name, value);
  };
  auto counter = [&](std::string_view name, auto value, std::string_view help) {
    family(name, "counter", help);
    sample(name, value);
  };
  const SchedulerStats& s = stats.scheduler;
  gauge("queue_length", s.waiting, "Requests waiting to be admitted.");
  gauge("running_requests", s.running, "Requests in the running batch.");
  gauge("tokens_per_second", stats.tokens_per_second, "Generated tokens per second over the last ~10 s.");
  family("pool_pages", "gauge", "Pages of the memory pool shared by KV blocks and adapters, by state.");
  sample("pool_pages", s.pool_used_pages, "state=\"used\"");
  sample("pool_pages", s.pool_reserved_pages, "state=\"reserved\"");
  sample("pool_pages", s.pool_available_pages, "state=\"available\"");
  gauge("pool_pages_total", s.pool_pages, "Pages in the memory pool.");
  gauge("adapters_loaded", stats.adapters_loaded, "Adapters registered (in host memory).");
  gauge("adapters_resident", s.adapters.resident, "Adapters holding pool pages.");
  gauge("adapters_pinned", s.adapters.pinned, "Resident adapters used by a running request.");
  gauge("adapter_pages", s.adapters.resident_pages, "Pool pages held by resident adapters.");
  counter("adapter_loads_total", s.adapters.loads, "Adapters made resident.");
  counter("adapter_evictions_total", s.adapters.evictions,
          "Resident adapters evicted (least recently used).");
  gauge("adapter_pool_bytes", stats.adapter_bytes_resident,
        "Bytes of the memory pool holding adapter weights.");
  counter("adapter_copied_bytes_total", stats.adapter_bytes_copied,
          "Bytes of adapter weights copied from host memory into the pool.");
  counter("requests_total", s.submitted, "Requests accepted by the engine.");
  counter("requests_queue_full_total", s.queue_full, "Requests refused with 429 (queue full).");
  counter("requests_finished_total", s.finished, "Requests that finished (stop or length).");
  counter("requests_cancelled_total", s.cancelled, "Requests cancelled (client gone, shutdown).");
  counter("requests_rejected_total", s.rejected, "Requests that could no longer be served.");
  counter("client_disconnects_total", http.disconnects, "Requests cancelled because their client went away.");
  counter("prompt_tokens_total", stats.prompt_tokens, "Prompt tokens prefilled.");
  counter("generation_tokens_total", s.tokens_generated, "Tokens generated.");
  counter("steps_total", s.steps, "Engine steps run.");
  counter("prefix_cache_queries_total", s.prefix_cache.queries,
          "Prompt tokens looked up in the prefix cache (vLLM's prefix_cache_queries).");
  counter("prefix_cache_hits_total", s.prefix_cache.hits,
          "Prompt tokens found in the prefix cache, their prefill skipped (vLLM's prefix_cache_hits).");
  gauge("prefix_cache_hit_rate",
        s.prefix_cache.queries > 0 ? static_cast<double>(s.prefix_cache.hits) / s.prefix_cache.queries : 0.0,
        "Prefix cache hits over queries, in prompt tokens, since start.");
  gauge("prefix_cache_pages", s.prefix_cache.cached_pages,
        "KV pages in the prefix cache (shared or evictable).");
  gauge("prefix_cache_evictable_pages", s.prefix_cache.evictable_pages,
        "Cached KV pages no running request holds (evicted least recently used first).");
  counter("prefix_cache_evictions_total", s.prefix_cache.evictions,
          "Cached KV pages evicted to free pool pages.");
  family("http_responses_total", "counter", "HTTP responses by status code.");
  for (const auto& [status, count] : http.responses)
    sample("http_responses_total", count, str("code=\"", status, "\""));

  family("time_to_first_token_seconds", "histogram", "Time from arrival to the first generated token.");
  for (size_t i = 0; i < stats.ttft_bounds.size() && i < stats.ttft_counts.size(); ++i)
    sample("time_to_first_token_seconds_bucket", stats.ttft_counts[i],
           str("le=\"", escape_label(str(stats.ttft_bounds[i])), "\""));
  const int64_t inf =
      stats.ttft_counts.size() > stats.ttft_bounds.size() ? stats.ttft_counts.back() : stats.ttft_count;
  sample("time_to_first_token_seconds_bucket", inf, "le=\"+Inf\"");
  sample("time_to_first_token_seconds_sum", stats.ttft_sum);
  sample("time_to_first_token_seconds_count", stats.ttft_count);

  // vLLM's vllm:request_queue_time_seconds, with its buckets.
  family("request_queue_time_seconds", "histogram", "Time from arrival to the request's first engine step.");
  const HistogramStats& queue = stats.queue_time;
  for (size_t i = 0; i < queue.cumulative.size(); ++i)
    sample("request_queue_time_seconds_bucket", queue.cumulative[i],
           str("le=\"", i < queue.bounds.size() ? escape_label(str(queue.bounds[i])) : std::string("+Inf"),
               "\""));
  sample("request_queue_time_seconds_sum", queue.sum);
  sample("request_queue_time_seconds_count", queue.count);
  family("adapter_requests_total", "counter",
         "Requests accepted by the engine, by adapter (\"\": the base model).");
  for (const auto& [adapter, count] : stats.adapter_requests)
    sample("adapter_requests_total", count, str("adapter=\"", escape_label(adapter), "\""));
  return out.str();
}

}  // namespace lowrank::serve
