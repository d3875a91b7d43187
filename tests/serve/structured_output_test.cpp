// Structured output (regex_automaton.h, json_schema_regex.h, token_constraint.h, the sampler's
// mask), each held to a computation that does not go through the automaton:
//   - the automaton's full matches against std::regex on random strings;
//   - each state's allowed tokens against brute force: every token's bytes appended to the text so
//     far, tested for prefix-viability by a naive backtracking matcher written here;
//   - the masked distribution against the unmasked one renormalised over the brute-force allowed
//     set, in float64;
//   - 200 seeded requests at temperature 1 through the engine (random tiny model, the byte-level
//     BPE fixture tokenizer): every output parses and validates against its schema by a JSON
//     schema validator written here, and every guided_regex / guided_choice output full-matches
//     under std::regex;
//   - the API's parsing and its 400s.
#include <cmath>
#include <functional>
#include <random>
#include <regex>

#include <gtest/gtest.h>

#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/model.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/json_schema_regex.h"
#include "lowrank/serve/openai_api.h"
#include "lowrank/serve/regex_automaton.h"
#include "lowrank/serve/sampler.h"
#include "lowrank/serve/token_constraint.h"
#include "tests/serve/api_testing.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

const data::Tokenizer& fixture_tokenizer() {
  static const data::Tokenizer tokenizer = data::Tokenizer::load(testing::fixture("hf/bpe-gpt2style"));
  return tokenizer;
}

bool full_match(RegexAutomaton& a, const std::string& text) {
  return a.accepting(a.walk(a.start(), text));
}

// ---- A naive backtracking matcher (ASCII patterns: literals, escapes, [..] with ranges, (|),
// * + ? {n,m}), with a prefix mode: running out of input counts as a possible match. ----------

struct Naive {
  enum class Kind { kSet, kConcat, kAlt, kRepeat } kind = Kind::kConcat;
  std::vector<bool> set;  // 256 bytes
  std::vector<Naive> children;
  int min = 0, max = -1;
};

class NaiveParser {
 public:
  explicit NaiveParser(std::string p) : p_(std::move(p)) {}
  Naive parse() { return alt(); }

 private:
  Naive alt() {
    Naive a{.kind = Naive::Kind::kAlt, .set = {}, .children = {seq()}, .min = 0, .max = -1};
    while (i_ < p_.size() && p_[i_] == '|') {
      ++i_;
      a.children.push_back(seq());
    }
    return a;
  }
  Naive seq() {
    Naive s{.kind = Naive::Kind::kConcat, .set = {}, .children = {}, .min = 0, .max = -1};
    while (i_ < p_.size() && p_[i_] != '|' && p_[i_] != ')') {
      Naive atom = this->atom();
      while (i_ < p_.size() && std::string("*+?{").find(p_[i_]) != std::string::npos) {
        Naive r{.kind = Naive::Kind::kRepeat, .set = {}, .children = {atom}, .min = 0, .max = -1};
        const char q = p_[i_++];
        if (q == '+') r.min = 1;
        if (q == '?') r.max = 1;
        if (q == '{') {
          const size_t close = p_.find('}', i_);
          const std::string body = p_.substr(i_, close - i_);
          i_ = close + 1;
          const size_t comma = body.find(',');
          r.min = std::stoi(body.substr(0, comma));
          r.max = comma == std::string::npos
                      ? r.min
                      : (comma + 1 == body.size() ? -1 : std::stoi(body.substr(comma + 1)));
        }
        atom = r;
      }
      s.children.push_back(atom);
    }
    return s;
  }
  Naive atom() {
    Naive n{
        .kind = Naive::Kind::kSet, .set = std::vector<bool>(256, false), .children = {}, .min = 0, .max = -1};
    const char c = p_[i_++];
    if (c == '(') {
      Naive inner = alt();
      ++i_;  // ')'
      return inner;
    }
    if (c == '[') {
      while (p_[i_] != ']') {
        char lo = p_[i_++];
        if (lo == '\\') lo = p_[i_++];
        char hi = lo;
        if (p_[i_] == '-' && p_[i_ + 1] != ']') {
          hi = p_[i_ + 1];
          i_ += 2;
        }
        for (int b = static_cast<unsigned char>(lo); b <= static_cast<unsigned char>(hi); ++b)
          n.set[static_cast<size_t>(b)] = true;
      }
      ++i_;
      return n;
    }
    n.set[static_cast<unsigned char>(c == '\\' ? p_[i_++] : c)] = true;
    return n;
  }
  std::string p_;
  size_t i_ = 0;
};

bool naive_match(const Naive& n, const std::string& s, size_t i, bool prefix,
                 const std::function<bool(size_t)>& k) {
  switch (n.kind) {
    case Naive::Kind::kSet:
      if (i == s.size()) return prefix;
      return n.set[static_cast<unsigned char>(s[i])] && k(i + 1);
    case Naive::Kind::kConcat: {
      std::function<bool(size_t, size_t)> from = [&](size_t c, size_t j) -> bool {
        if (c == n.children.size()) return k(j);
        return naive_match(n.children[c], s, j, prefix, [&](size_t m) { return from(c + 1, m); });
      };
      return from(0, i);
    }
    case Naive::Kind::kAlt:
      for (const Naive& c : n.children)
        if (naive_match(c, s, i, prefix, k)) return true;
      return false;
    case Naive::Kind::kRepeat: {
      std::function<bool(int, size_t)> rep = [&](int count, size_t j) -> bool {
        if (count >= n.min && k(j)) return true;
        if (n.max >= 0 && count >= n.max) return false;
        return naive_match(n.children[0], s, j, prefix, [&](size_t m) { return m > j && rep(count + 1, m); });
      };
      return rep(0, i);
    }
  }
  return false;
}

// True when `s` can be extended to a full match (prefix) or is one.
bool naive_viable(const Naive& n, const std::string& s, bool prefix) {
  return naive_match(n, s, 0, prefix, [&](size_t j) { return j == s.size(); });
}

TEST(StructuredOutputTest, AutomatonFullMatchesAgreeWithStdRegex) {
  const std::vector<std::string> patterns = {"[a-c]{1,4}-(x|yz)[0-9]?", "(ab|a)*b+", "x?y{2,}(z|)",
                                             "[0-9]+(\\.[0-9]{1,2})?", "(a|b)(c|d)*e{0,2}"};
  std::mt19937 rng(3);
  const std::string alphabet = "abcdexyz-.0189";
  for (const std::string& p : patterns) {
    auto a = RegexAutomaton::compile(p);
    const std::regex reference(p);
    int matches = 0;
    for (int t = 0; t < 3000; ++t) {
      std::string s;
      const int len = static_cast<int>(rng() % 8);
      for (int k = 0; k < len; ++k) s += alphabet[rng() % alphabet.size()];
      const bool expected = std::regex_match(s, reference);
      matches += expected;
      ASSERT_EQ(full_match(*a, s), expected) << p << " on \"" << s << "\"";
    }
    EXPECT_GT(matches, 0) << p;  // the oracle saw both outcomes
  }
}

TEST(StructuredOutputTest, UnicodeClassesMatchWholeCharacters) {
  // [^"] and . stand for code points: every UTF-8 length passes, a lone continuation byte not.
  auto a = RegexAutomaton::compile(R"(([^"\\\x00-\x1F\x7F-\x9F])*)");
  for (std::string s : {"aé", "€", "𝄞x", "\xC2\xA0", "ok"}) EXPECT_TRUE(full_match(*a, s)) << s;
  for (std::string s : {"\"", "\x80", "\xC2\x85", "\xED\xA0\x80", "\x7F", "\xC3"})
    EXPECT_FALSE(full_match(*a, s)) << s;
  auto b = RegexAutomaton::compile("[\\u00e0-\\u00e9]+");
  EXPECT_TRUE(full_match(*b, "àé"));
  EXPECT_FALSE(full_match(*b, "ê"));
}

TEST(StructuredOutputTest, AllowedTokensEqualBruteForce) {
  const auto vocabulary = TokenVocabulary::of(fixture_tokenizer());
  const std::vector<std::string> patterns = {"[a-c]{1,4}-(x|yz)[0-9]?", R"(\{"a": (true|false|[0-9]+)\})",
                                             "(the|then|that) [a-z]+ ?", "[ -~]{0,5}x"};
  std::mt19937 rng(11);
  for (const std::string& p : patterns) {
    TokenConstraint constraint(RegexAutomaton::compile(p), vocabulary);
    const Naive naive = NaiveParser(p).parse();
    // A random walk through allowed tokens; at every step the allowed set equals brute force.
    for (int walk = 0; walk < 4; ++walk) {
      auto state = constraint.start();
      std::string text;
      for (int step = 0; step < 6; ++step) {
        const AllowedTokens& allowed = constraint.allowed(state);
        std::vector<int32_t> expected;
        for (int64_t id = 0; id < vocabulary->size(); ++id) {
          const auto& bytes = vocabulary->bytes(id);
          if (bytes && !bytes->empty() && naive_viable(naive, text + *bytes, true))
            expected.push_back(static_cast<int32_t>(id));
        }
        ASSERT_EQ(allowed.ids, expected) << p << " after \"" << text << "\"";
        ASSERT_EQ(allowed.accepting, naive_viable(naive, text, false)) << p << " after \"" << text << "\"";
        if (allowed.ids.empty()) break;
        const int32_t token = allowed.ids[rng() % allowed.ids.size()];
        state = constraint.advance(state, token);
        text += *vocabulary->bytes(token);
      }
    }
  }
}

TEST(StructuredOutputTest, MaskedDistributionIsTheRenormalisedOne) {
  const auto vocabulary = TokenVocabulary::of(fixture_tokenizer());
  SamplingParams s;
  s.constraint =
      std::make_shared<TokenConstraint>(RegexAutomaton::compile("(the|then|that) [a-z]+"), vocabulary);
  const std::vector<int64_t> stop_ids = {2};
  RequestSampler sampler(s, stop_ids, 0);
  const int64_t V = vocabulary->size();
  at::Tensor logits = at::randn({V}, at::TensorOptions().dtype(at::kFloat)) * 3;
  const Naive naive = NaiveParser("(the|then|that) [a-z]+").parse();
  std::string text;
  for (int step = 0; step < 4; ++step) {
    const at::Tensor masked = sampler.constrain(logits);
    const at::Tensor reported = masked.log_softmax(0);
    // float64 by hand: log p(j) - log Σ_{i allowed} p(i), over the brute-force allowed set.
    std::vector<int64_t> allowed;
    for (int64_t id = 0; id < V; ++id) {
      const auto& bytes = vocabulary->bytes(id);
      if (bytes && !bytes->empty() && naive_viable(naive, text + *bytes, true)) allowed.push_back(id);
    }
    if (naive_viable(naive, text, false)) allowed.push_back(2);  // eos in an accepting state
    double total = 0;
    for (int64_t id : allowed) total += std::exp(static_cast<double>(logits[id].item<float>()));
    for (int64_t id = 0; id < V; ++id) {
      const bool is_allowed = std::find(allowed.begin(), allowed.end(), id) != allowed.end();
      const float got = reported[id].item<float>();
      if (!is_allowed) {
        ASSERT_TRUE(std::isinf(got) && got < 0) << "token " << id << " at step " << step;
      } else {
        const double want = static_cast<double>(logits[id].item<float>()) - std::log(total);
        ASSERT_NEAR(got, want, 1e-6 * std::max(1.0, std::abs(want))) << "token " << id << " at step " << step;
      }
    }
    const int64_t token = sampler.next(masked.unsqueeze(0).clone(), {});
    sampler.accept(token);
    if (token == 2) break;
    text += *vocabulary->bytes(token);
  }
}

TEST(StructuredOutputTest, MinTokensYieldsToACompleteOutput) {
  // The text "a" is complete and nothing may follow it but eos: min_tokens, which would hold eos
  // back, gives way (sampler.h) instead of leaving no token to draw.
  const auto vocabulary = TokenVocabulary::of(fixture_tokenizer());
  SamplingParams s;
  s.temperature = 0;
  s.min_tokens = 4;
  s.max_new_tokens = 8;
  s.constraint = std::make_shared<TokenConstraint>(RegexAutomaton::compile("a"), vocabulary);
  RequestSampler sampler(s, {2}, 0);
  const int64_t a = *fixture_tokenizer().token_to_id("a");
  sampler.accept(a);
  const at::Tensor logits = at::zeros({vocabulary->size()});
  const at::Tensor masked = sampler.constrain(logits);
  EXPECT_EQ(sampler.next(masked.unsqueeze(0).clone(), {a}), 2);
  // Before the text is complete, eos is not allowed whatever min_tokens says.
  RequestSampler fresh(s, {2}, 0);
  EXPECT_EQ(fresh.next(fresh.constrain(logits).unsqueeze(0).clone(), {}), a);
}

// ---- A JSON schema validator for the subset (independent of the regex path) -----------------

int64_t code_points(const std::string& s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

bool validates(const Json& v, const Json& schema, const Json& root) {
  if (schema.contains("$ref"))
    return validates(v, root.at(Json::json_pointer(schema["$ref"].get<std::string>().substr(1))), root);
  if (schema.contains("const") && v != schema["const"]) return false;
  if (schema.contains("enum")) {
    bool any = false;
    for (const Json& e : schema["enum"]) any |= e == v;
    if (!any) return false;
  }
  if (schema.contains("anyOf")) {
    bool any = false;
    for (const Json& s : schema["anyOf"]) any |= validates(v, s, root);
    if (!any) return false;
  }
  if (schema.contains("oneOf")) {
    int count = 0;
    for (const Json& s : schema["oneOf"]) count += validates(v, s, root);
    if (count != 1) return false;
  }
  if (schema.contains("type")) {
    const Json types = schema["type"].is_array() ? schema["type"] : Json::array({schema["type"]});
    bool any = false;
    for (const Json& t : types) {
      const std::string name = t.get<std::string>();
      any |= (name == "object" && v.is_object()) || (name == "array" && v.is_array()) ||
             (name == "string" && v.is_string()) || (name == "boolean" && v.is_boolean()) ||
             (name == "null" && v.is_null()) || (name == "number" && v.is_number()) ||
             (name == "integer" && (v.is_number_integer() ||
                                    (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())));
    }
    if (!any) return false;
  }
  if (v.is_object()) {
    const Json props = schema.value("properties", Json::object());
    for (const Json& r : schema.value("required", Json::array()))
      if (!v.contains(r.get<std::string>())) return false;
    for (const auto& [key, value] : v.items()) {
      if (props.contains(key)) {
        if (!validates(value, props[key], root)) return false;
      } else if (schema.contains("additionalProperties")) {
        const Json& extra = schema["additionalProperties"];
        if (extra.is_boolean() ? !extra.get<bool>() : !validates(value, extra, root)) return false;
      }
    }
  }
  if (v.is_array()) {
    const auto n = static_cast<int64_t>(v.size());
    if (n < schema.value("minItems", int64_t{0}) || n > schema.value("maxItems", int64_t{1} << 40))
      return false;
    if (schema.contains("items"))
      for (const Json& item : v)
        if (!validates(item, schema["items"], root)) return false;
  }
  if (v.is_string()) {
    const int64_t n = code_points(v.get<std::string>());
    if (n < schema.value("minLength", int64_t{0}) || n > schema.value("maxLength", int64_t{1} << 40))
      return false;
    if (schema.contains("pattern") &&
        !std::regex_search(v.get<std::string>(), std::regex(schema["pattern"].get<std::string>())))
      return false;
  }
  return true;
}

// A JSON text as nlohmann parses it, except that a number whose exponent overflows a double
// (JSON allows any exponent, and the schema's number regex, outlines', bounds none) has its
// exponent replaced by 0 first: the value is still a number of the same sign and kind.
Json parse_json_text(const std::string& text) {
  try {
    return Json::parse(text);
  } catch (const Json::out_of_range&) {
    return Json::parse(std::regex_replace(text, std::regex("[eE][+-]?[0-9]+"), "e0"));
  }
}

TEST(StructuredOutputTest, ValidatorRejectsWhatItShould) {
  // The validator is itself an oracle: it must say no.
  const Json schema = Json::parse(
      R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string","maxLength":2}},"required":["a"],"additionalProperties":false})");
  EXPECT_TRUE(validates(Json::parse(R"({"a":1,"b":"xy"})"), schema, schema));
  for (const char* bad : {R"({"b":"x"})", R"({"a":1.5})", R"({"a":1,"b":"xyz"})", R"({"a":1,"c":2})", "[1]"})
    EXPECT_FALSE(validates(Json::parse(bad), schema, schema)) << bad;
}

// ---- 200 sampled requests through the engine ----------------------------------------------------

struct Case {
  std::string kind;  // "schema", "regex", "choice"
  std::string spec;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"schema",
       R"({"type":"object","properties":{"name":{"type":"string","maxLength":4},"age":{"type":"integer"}},"required":["name","age"]})"},
      {"schema",
       R"({"type":"object","properties":{"color":{"enum":["red","green",1,null]},"ok":{"type":"boolean"}},"required":["color"]})"},
      {"schema", R"({"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3})"},
      {"schema",
       R"({"$defs":{"p":{"type":"object","properties":{"x":{"type":"number"}},"required":["x"]}},"anyOf":[{"$ref":"#/$defs/p"},{"type":"null"}]})"},
      {"schema",
       R"({"type":"object","properties":{"id":{"type":"string","pattern":"^[a-z]{2}[0-9]{1,3}$"}},"required":["id"]})"},
      {"schema",
       R"({"type":"object","properties":{"tags":{"type":"array","items":{"type":"string","minLength":1,"maxLength":3},"maxItems":2},"v":{"type":["integer","null"]}},"additionalProperties":false})"},
      {"schema", R"({"oneOf":[{"const":"a"},{"const":{"k":[1,2]}}]})"},
      {"schema",
       R"({"type":"object","properties":{"e":{"const":true},"s":{"type":"string","minLength":2,"maxLength":3}},"required":["e","s"]})"},
      {"regex", "[a-c]{1,4}-(x|yz)[0-9]?"},
      {"choice", R"(["yes","no","maybe so"])"},
  };
  return c;
}

// The request body fields of a case.
Json structured_fields(const Case& c) {
  if (c.kind == "schema")
    return {{"response_format",
             {{"type", "json_schema"}, {"json_schema", {{"name", "t"}, {"schema", Json::parse(c.spec)}}}}}};
  if (c.kind == "regex") return {{"guided_regex", c.spec}};
  return {{"guided_choice", Json::parse(c.spec)}};
}

// A random tiny model over the fixture tokenizer's vocabulary, served by an engine that stops at
// its eos, with the API limits of its context.
struct TinyServer {
  std::unique_ptr<Engine> engine;
  std::shared_ptr<const data::Tokenizer> tokenizer;
  ApiLimits limits;
};

TinyServer tiny_server(int64_t context, uint64_t seed, int64_t num_pages) {
  testing::TinyLlama shape;
  shape.vocab_size = fixture_tokenizer().vocab_size();
  shape.hidden_size = 16;
  shape.intermediate_size = 32;
  shape.heads = 2;
  shape.kv_heads = 2;
  shape.context = context;
  auto model = std::make_shared<nn::Model>(testing::tiny_llama(shape, seed));
  TinyServer server;
  server.tokenizer = std::make_shared<const data::Tokenizer>(fixture_tokenizer());
  EngineConfig config;
  config.num_pages = num_pages;
  config.page_tokens = 8;
  config.scheduler.max_running = 100;
  config.scheduler.max_batch_tokens = 2048;
  server.engine = std::make_unique<Engine>(model, server.tokenizer,
                                           std::vector<int64_t>{*server.tokenizer->eos_id()}, config);
  server.limits = {
      .context = context, .vocab_size = shape.vocab_size, .max_prompt_tokens = 0, .max_choices = 64};
  return server;
}

TEST(StructuredOutputTest, TwoHundredSampledOutputsValidate) {
  TinyServer server = tiny_server(160, 7, 512);
  Engine& engine = *server.engine;
  const data::Tokenizer* tokenizer = server.tokenizer.get();
  const ApiLimits limits = server.limits;
  struct Sent {
    size_t c;
    std::shared_ptr<RequestStream> stream;
  };
  std::vector<Sent> sent;
  for (int i = 0; i < 200; ++i) {
    const size_t c = static_cast<size_t>(i) % cases().size();
    Json body = structured_fields(cases()[c]);
    body["prompt"] = "Answer: ";
    body["max_tokens"] = 96;
    body["temperature"] = 1.0;
    body["seed"] = 1000 + i;
    const GenerateCall call = parse_completion_request(body, *tokenizer, limits);
    ASSERT_NE(call.sampling.constraint, nullptr);
    GenerationRequest r{.adapter = "", .prompt = call.prompts[0], .sampling = call.sampling};
    sent.push_back({c, engine.submit(std::move(r)).stream});
  }
  engine.run_until_idle();
  int validated = 0;
  for (const Sent& s : sent) {
    std::string text;
    const StreamEvent finish = s.stream->wait(&text);
    const Case& c = cases()[s.c];
    ASSERT_EQ(finish.finish, FinishReason::kStop) << c.spec << " gave \"" << text << "\"";
    if (c.kind == "schema") {
      Json value;
      ASSERT_NO_THROW(value = parse_json_text(text)) << c.spec << " gave \"" << text << "\"";
      const Json schema = Json::parse(c.spec);
      ASSERT_TRUE(validates(value, schema, schema)) << c.spec << " gave \"" << text << "\"";
    } else if (c.kind == "regex") {
      ASSERT_TRUE(std::regex_match(text, std::regex(c.spec))) << c.spec << " gave \"" << text << "\"";
    } else {
      bool any = false;
      for (const Json& choice : Json::parse(c.spec)) any |= choice.get<std::string>() == text;
      ASSERT_TRUE(any) << c.spec << " gave \"" << text << "\"";
    }
    ++validated;
  }
  EXPECT_EQ(validated, 200);
}

TEST(StructuredOutputTest, JsonObjectModeGivesObjects) {
  // OpenAI's JSON mode: strings are unbounded, so an output may run into max_tokens; one that
  // stops parses as an object, one cut short is a prefix the automaton still accepts.
  TinyServer server = tiny_server(96, 5, 256);
  Engine& engine = *server.engine;
  const data::Tokenizer* tokenizer = server.tokenizer.get();
  const ApiLimits limits = server.limits;
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::shared_ptr<TokenConstraint> constraint;
  for (int i = 0; i < 16; ++i) {
    const Json body = {
        {"prompt", "{"}, {"max_tokens", 64}, {"seed", i}, {"response_format", {{"type", "json_object"}}}};
    const GenerateCall call = parse_completion_request(body, *tokenizer, limits);
    constraint = call.sampling.constraint;
    streams.push_back(
        engine.submit({.adapter = "", .prompt = call.prompts[0], .sampling = call.sampling}).stream);
  }
  engine.run_until_idle();
  int stopped = 0;
  for (auto& s : streams) {
    std::vector<int64_t> tokens;
    const StreamEvent finish = s->wait(nullptr, &tokens);
    std::string bytes;
    for (int64_t t : tokens)
      if (constraint->vocabulary().bytes(t)) bytes += *constraint->vocabulary().bytes(t);
    if (finish.finish == FinishReason::kStop) {
      ++stopped;
      EXPECT_TRUE(parse_json_text(bytes).is_object()) << bytes;
    } else {
      EXPECT_NE(constraint->automaton().walk(constraint->start(), bytes), RegexAutomaton::kDead) << bytes;
    }
  }
  EXPECT_GT(stopped, 0);
}

// ---- The API --------------------------------------------------------------------------------------

TEST(StructuredOutputTest, ApiErrorsNameTheParameterAndTheConstruct) {
  using testing_support::param_of;
  const ApiLimits limits{.context = 64, .vocab_size = 512, .max_prompt_tokens = 0, .max_choices = 8};
  auto parse = [&](Json fields) {
    fields["prompt"] = "x";
    return parse_completion_request(fields, fixture_tokenizer(), limits);
  };
  auto message_of = [&](Json fields) {
    try {
      parse(std::move(fields));
    } catch (const ApiError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const Json bad_keyword = {
      {"response_format",
       {{"type", "json_schema"},
        {"json_schema",
         {{"name", "t"}, {"schema", {{"type", "object"}, {"patternProperties", Json::object()}}}}}}}};
  EXPECT_EQ(param_of([&] { parse(bad_keyword); }), "response_format.json_schema.schema");
  EXPECT_EQ(message_of(bad_keyword),
            "response_format.json_schema.schema: unsupported keyword 'patternProperties'");
  EXPECT_EQ(param_of([&] { parse({{"guided_regex", "a(?=b)"}}); }), "guided_regex");
  EXPECT_NE(message_of({{"guided_regex", "a(?=b)"}}).find("lookaround"), std::string::npos);
  EXPECT_EQ(param_of([&] { parse({{"guided_regex", "(a"}}); }), "guided_regex");
  EXPECT_EQ(param_of([&] { parse({{"guided_choice", Json::array()}}); }), "guided_choice");
  // Two at once: the error names the later one in the order response_format, guided_json,
  // guided_regex, guided_choice.
  EXPECT_EQ(param_of([&] { parse({{"guided_choice", {"a"}}, {"guided_regex", "a"}}); }), "guided_choice");
  EXPECT_EQ(param_of([&] {
              parse({{"response_format", {{"type", "json_object"}}}, {"guided_choice", {"a"}}});
            }),
            "guided_choice");
  EXPECT_EQ(param_of([&] { parse({{"response_format", {{"type", "xml"}}}}); }), "response_format.type");
  EXPECT_EQ(param_of([&] {
              parse({{"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "t"}}}}}});
            }),
            "response_format.json_schema.schema");
  EXPECT_EQ(param_of([&] { parse({{"guided_regex", "a"}, {"ignore_eos", true}}); }), "ignore_eos");
  EXPECT_EQ(param_of([&] { parse({{"guided_grammar", "root ::= a"}}); }), "guided_grammar");
  const Json nested = Json::parse(R"({"type":"object","properties":{"n":{"type":"integer","minimum":3}}})");
  EXPECT_NE(message_of({{"guided_json", nested}}).find("at /properties/n: unsupported keyword 'minimum'"),
            std::string::npos);
  // Text and no structured output are the same request.
  EXPECT_EQ(parse({{"response_format", {{"type", "text"}}}}).sampling.constraint, nullptr);
  // The cache: the same spec twice is one constraint.
  const auto a = parse({{"guided_choice", {"p", "q"}}}).sampling.constraint;
  const auto b = parse({{"guided_choice", {"p", "q"}}}).sampling.constraint;
  EXPECT_EQ(a, b);
}

TEST(StructuredOutputTest, ConstraintCacheEvictsTheLeastRecentlyUsed) {
  const auto vocabulary = TokenVocabulary::of(fixture_tokenizer());
  ConstraintCache cache(2);
  auto get = [&](const std::string& p) {
    return cache.get(ConstraintKind::kRegex, p, vocabulary, [&] { return p; });
  };
  const auto a = get("a");
  get("b");
  EXPECT_EQ(get("a"), a);  // a is now the most recent
  get("c");                // evicts b
  EXPECT_EQ(cache.size(), 2U);
  EXPECT_EQ(get("a"), a);
  const int64_t misses = cache.misses();
  get("b");
  EXPECT_EQ(cache.misses(), misses + 1);
}

TEST(StructuredOutputTest, SchemaRegexFollowsOutlines) {
  // outlines-core's rules on small schemas, their regexes spelled out by hand from parsing.rs.
  EXPECT_EQ(json_schema_regex(Json::parse(R"({"type":"integer"})"), "s"), "(-)?(0|[1-9][0-9]*)");
  EXPECT_EQ(json_schema_regex(Json::parse(R"({"enum":["a",1]})"), "s"), R"(("a"|1))");
  EXPECT_EQ(json_schema_regex(Json::parse(R"({"type":"array","items":{"type":"null"},"maxItems":0})"), "s"),
            R"(\[[ ]?\])");
  EXPECT_EQ(json_schema_regex(
                Json::parse(R"({"type":"object","properties":{"a":{"type":"null"}},"required":["a"]})"), "s"),
            R"(\{[ ]?"a"[ ]?:[ ]?null[ ]?\})");
}

}  // namespace
}  // namespace lowrank::serve
