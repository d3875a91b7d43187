// OpenAI request parsing, response shapes, chat templates, metrics text, and the server's
// constant-time key comparison, without sockets (the adapter root's confinement is in
// adapter_root_test.cpp).
#include "lowrank/serve/openai_api.h"

#include <filesystem>
#include <limits>

#include <gtest/gtest.h>

#include "lowrank/data/tokenizer.h"
#include "lowrank/serve/http_server.h"
#include "tests/serve/api_testing.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

namespace fs = std::filesystem;

const data::Tokenizer& tokenizer() {
  static const data::Tokenizer t = data::Tokenizer::load(testing::fixture("hf/bpe-gpt2style/tokenizer.json"));
  return t;
}

ApiLimits limits() {
  return {.context = 256, .vocab_size = 512, .max_prompt_tokens = 64, .max_choices = 8};
}

using testing_support::param_of;

TEST(OpenAiApiTest, ParsesCompletionDefaultsAndSampling) {
  const GenerateCall call = parse_completion_request(
      Json{
          {"model", "m"}, {"prompt", {1, 17, 240}}, {"temperature", 0}, {"seed", 7}, {"stop", "x"}, {"n", 2}},
      tokenizer(), limits());
  EXPECT_EQ(call.model, "m");
  ASSERT_EQ(call.prompts.size(), 1u);
  EXPECT_EQ(call.prompts[0], (std::vector<int64_t>{1, 17, 240}));
  EXPECT_EQ(call.sampling.max_new_tokens, 16);  // OpenAI's default for completions
  EXPECT_EQ(call.sampling.temperature, 0.0);
  EXPECT_EQ(call.sampling.seed, 7u);
  EXPECT_EQ(call.sampling.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(call.n, 2);
  EXPECT_FALSE(call.stream);
}

TEST(OpenAiApiTest, TokenizesTextPromptsAndBatches) {
  const GenerateCall one = parse_completion_request(Json{{"prompt", "hello world"}}, tokenizer(), limits());
  std::vector<int32_t> ids = tokenizer().encode("hello world", true);
  EXPECT_EQ(one.prompts.at(0), std::vector<int64_t>(ids.begin(), ids.end()));
  const GenerateCall two =
      parse_completion_request(Json{{"prompt", {"a b", "c"}}, {"max_tokens", 3}}, tokenizer(), limits());
  EXPECT_EQ(two.prompts.size(), 2u);
  EXPECT_EQ(two.sampling.max_new_tokens, 3);
}

TEST(OpenAiApiTest, BadFieldsAreNamed) {
  auto parse = [](Json body) { return [body] { parse_completion_request(body, tokenizer(), limits()); }; };
  int status = 0;
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"temperature", 3}}), &status), "temperature");
  EXPECT_EQ(status, 400);
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"top_p", 0}})), "top_p");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"n", 0}})), "n");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"n", 9}})), "n");  // over max_choices
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"max_tokens", "ten"}})), "max_tokens");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"max_tokens", 0}})), "max_tokens");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"max_tokens", 256}})), "max_tokens");  // over the context
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"stop", {1}}})), "stop");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"stream", "yes"}})), "stream");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logprobs", 21}})), "logprobs");  // over vLLM's 20
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logprobs", true}})), "logprobs");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"presence_penalty", 2.5}})), "presence_penalty");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"frequency_penalty", -3}})), "frequency_penalty");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logit_bias", {{"5", 101}}}})), "logit_bias");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logit_bias", {{"5", -100.5}}}})), "logit_bias");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logit_bias", {{"512", 1}}}})), "logit_bias");  // vocabulary
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logit_bias", {{"-1", 1}}}})), "logit_bias");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logit_bias", {{"five", 1}}}})), "logit_bias");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logit_bias", {{"5x", 1}}}})), "logit_bias");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logit_bias", {{"5", "up"}}}})), "logit_bias");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"logit_bias", {1, 2}}})), "logit_bias");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"min_tokens", 17}})), "min_tokens");  // > max_tokens 16
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"min_tokens", -1}})), "min_tokens");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"user", 5}})), "user");
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"echo", "yes"}})), "echo");
  EXPECT_EQ(param_of(parse({{"prompt", "a"},
                            {"logprobs", 20},
                            {"echo", true},
                            {"min_tokens", 16},
                            {"logit_bias", {{"5", -100}, {"7", 100}}},
                            {"presence_penalty", -2},
                            {"frequency_penalty", 2},
                            {"user", "u"}})),
            "(no error)");
  EXPECT_EQ(param_of(parse({{"max_tokens", 3}})), "prompt");
  EXPECT_EQ(param_of(parse({{"prompt", ""}})), "prompt");                           // no tokens
  EXPECT_EQ(param_of(parse({{"prompt", std::vector<int64_t>(65, 5)}})), "prompt");  // over 64
  EXPECT_EQ(param_of(parse({{"prompt", {1, 512}}})), "prompt");                     // outside the vocabulary
  EXPECT_EQ(param_of(parse({{"prompt", "a"}, {"max_tokens", 2}, {"top_k", -1}})), "(no error)");
}

TEST(OpenAiApiTest, ParsesLogprobsEchoPenaltiesAndBias) {
  const GenerateCall c = parse_completion_request(Json{{"prompt", Json::array({"hi", Json::array({3, 4})})},
                                                       {"logprobs", 2},
                                                       {"echo", true},
                                                       {"logit_bias", {{"7", -2.5}}},
                                                       {"presence_penalty", 0.5},
                                                       {"frequency_penalty", -0.25},
                                                       {"min_tokens", 3},
                                                       {"user", "u1"}},
                                                  tokenizer(), limits());
  EXPECT_TRUE(c.logprobs);
  EXPECT_EQ(c.sampling.logprobs, 2);
  EXPECT_EQ(c.sampling.prompt_logprobs, 2);  // echo with logprobs: the prompt's too (vLLM)
  ASSERT_EQ(c.prompt_texts.size(), 2u);
  EXPECT_EQ(c.prompt_texts[0], "hi");
  const std::vector<int32_t> ids{3, 4};
  EXPECT_EQ(c.prompt_texts[1], tokenizer().decode(ids));
  EXPECT_EQ(c.sampling.logit_bias, (std::vector<std::pair<int64_t, double>>{{7, -2.5}}));
  EXPECT_EQ(c.sampling.presence_penalty, 0.5);
  EXPECT_EQ(c.sampling.frequency_penalty, -0.25);
  EXPECT_EQ(c.sampling.min_tokens, 3);
  EXPECT_EQ(c.user, "u1");
  const GenerateCall plain =
      parse_completion_request(Json{{"prompt", "a"}, {"echo", true}}, tokenizer(), limits());
  EXPECT_EQ(plain.sampling.logprobs, -1);
  EXPECT_EQ(plain.sampling.prompt_logprobs, -1);

  const Json messages = Json::array({{{"role", "user"}, {"content", "hi"}}});
  const GenerateCall chat = parse_chat_request(
      Json{{"messages", messages}, {"logprobs", true}, {"top_logprobs", 4}, {"max_completion_tokens", 5}},
      tokenizer(), ChatTemplate::kPlain, limits());
  EXPECT_TRUE(chat.logprobs);
  EXPECT_EQ(chat.sampling.logprobs, 4);
  EXPECT_EQ(chat.sampling.max_new_tokens, 5);
  auto parse_chat = [&](Json extra) {
    return [&, extra] {
      Json body = extra;
      body["messages"] = messages;
      parse_chat_request(body, tokenizer(), ChatTemplate::kPlain, limits());
    };
  };
  EXPECT_EQ(param_of(parse_chat({{"logprobs", true}, {"top_logprobs", 21}})), "top_logprobs");
  EXPECT_EQ(param_of(parse_chat({{"logprobs", true}, {"top_logprobs", -1}})), "top_logprobs");
  EXPECT_EQ(param_of(parse_chat({{"top_logprobs", 2}})), "top_logprobs");  // without logprobs
  EXPECT_EQ(param_of(parse_chat({{"logprobs", 2}})), "logprobs");
  EXPECT_EQ(param_of(parse_chat({{"echo", true}})), "echo");
  EXPECT_EQ(param_of(parse_chat({{"max_completion_tokens", 0}})), "max_completion_tokens");
  EXPECT_EQ(param_of(parse_chat({{"logprobs", true}, {"top_logprobs", 20}})), "(no error)");
}

TEST(OpenAiApiTest, LogprobsShapes) {
  // Hand-made entries, token i's text "t<i>" (and "é" for 9: two bytes, one character).
  const TokenText text = [](int64_t id) { return id == 9 ? std::string("\xc3\xa9") : str("t", id); };
  const std::vector<LogprobEntry> entries{
      {.token = 9, .logprob = -0.5F, .top = {{.token = 9, .logprob = -0.5F}, {.token = 2, .logprob = -1.5F}}},
      {.token = 3,
       .logprob = -std::numeric_limits<float>::infinity(),
       .top = {{.token = 1, .logprob = -0.1F}, {.token = 2, .logprob = -2.5F}}}};
  int64_t offset = 10;
  const OrderedJson c = completion_logprobs(int64_t{12}, entries, offset, text);
  EXPECT_EQ(c["tokens"], OrderedJson({"t12", "\xc3\xa9", "t3"}));
  EXPECT_EQ(c["text_offset"], OrderedJson({10, 13, 14}));  // characters, not bytes
  EXPECT_EQ(offset, 16);
  EXPECT_TRUE(c["token_logprobs"][0].is_null());
  EXPECT_TRUE(c["top_logprobs"][0].is_null());
  EXPECT_EQ(c["token_logprobs"][1], -0.5);
  EXPECT_EQ(c["token_logprobs"][2], -9999.0);  // -inf clamped as vLLM
  // The chosen token first, then the top k; the chosen one outside the top k makes k + 1.
  EXPECT_EQ(c["top_logprobs"][1].size(), 2u);
  EXPECT_EQ(c["top_logprobs"][2].size(), 3u);
  EXPECT_EQ(c["top_logprobs"][2].begin().key(), "t3");
  EXPECT_NEAR(c["top_logprobs"][2]["t1"].get<double>(), -0.1, 1e-6);

  // Two tokens of one text share a key: the first one's place, the later one's value (vLLM's dict).
  const TokenText same = [](int64_t id) { return id == 5 || id == 6 ? std::string("dup") : str("t", id); };
  const std::vector<LogprobEntry> collide{
      {.token = 4,
       .logprob = -1.F,
       .top = {{.token = 5, .logprob = -0.25F}, {.token = 6, .logprob = -0.5F}}}};
  int64_t start = 0;
  const OrderedJson d = completion_logprobs(std::nullopt, collide, start, same)["top_logprobs"][0];
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.begin().key(), "t4");
  EXPECT_EQ(d["dup"], -0.5);

  const OrderedJson chat = chat_logprobs(entries, text);
  ASSERT_EQ(chat["content"].size(), 2u);
  EXPECT_EQ(chat["content"][0]["token"], "\xc3\xa9");
  EXPECT_EQ(chat["content"][0]["bytes"], OrderedJson({0xc3, 0xa9}));
  EXPECT_EQ(chat["content"][1]["logprob"], -9999.0);
  ASSERT_EQ(chat["content"][1]["top_logprobs"].size(), 2u);  // exactly the top k
  EXPECT_EQ(chat["content"][1]["top_logprobs"][0]["token"], "t1");
  EXPECT_EQ(chat["content"][1]["top_logprobs"][1]["bytes"], OrderedJson({116, 50}));
}

TEST(OpenAiApiTest, TokenizeAndDetokenize) {
  const OrderedJson t = tokenize_response(Json{{"prompt", "hello world"}, {"return_token_strs", true}},
                                          tokenizer(), ChatTemplate::kPlain, limits());
  const std::vector<int32_t> ids = tokenizer().encode("hello world", true);
  EXPECT_EQ(t["tokens"], OrderedJson(std::vector<int64_t>(ids.begin(), ids.end())));
  EXPECT_EQ(t["count"], ids.size());
  EXPECT_EQ(t["max_model_len"], 256);
  ASSERT_EQ(t["token_strs"].size(), ids.size());
  EXPECT_EQ(t["token_strs"][0], tokenizer().id_to_token(ids[0]));
  const OrderedJson bare = tokenize_response(Json{{"prompt", "hello world"}, {"add_special_tokens", false}},
                                             tokenizer(), ChatTemplate::kPlain, limits());
  const std::vector<int32_t> bare_ids = tokenizer().encode("hello world", false);
  EXPECT_EQ(bare["tokens"], OrderedJson(std::vector<int64_t>(bare_ids.begin(), bare_ids.end())));
  EXPECT_TRUE(bare["token_strs"].is_null());
  const Json messages = Json::array({{{"role", "user"}, {"content", "hi"}}});
  const OrderedJson chat =
      tokenize_response(Json{{"messages", messages}}, tokenizer(), ChatTemplate::kPlain, limits());
  const GenerateCall call =
      parse_chat_request(Json{{"messages", messages}}, tokenizer(), ChatTemplate::kPlain, limits());
  EXPECT_EQ(chat["tokens"], OrderedJson(call.prompts[0]));
  const OrderedJson d = detokenize_response(
      Json{{"tokens", std::vector<int64_t>(bare_ids.begin(), bare_ids.end())}}, tokenizer(), limits());
  EXPECT_EQ(d["prompt"], "hello world");
  auto tok = [](Json body) {
    return [body] { tokenize_response(body, tokenizer(), ChatTemplate::kPlain, limits()); };
  };
  auto detok = [](Json body) { return [body] { detokenize_response(body, tokenizer(), limits()); }; };
  EXPECT_EQ(param_of(tok(Json::object())), "prompt");
  EXPECT_EQ(param_of(tok({{"prompt", 5}})), "prompt");
  EXPECT_EQ(param_of(tok({{"prompt", "a"}, {"add_special_tokens", "no"}})), "add_special_tokens");
  EXPECT_EQ(param_of(detok({{"tokens", {1, 512}}})), "tokens");
  EXPECT_EQ(param_of(detok({{"tokens", {1, "a"}}})), "tokens");
  EXPECT_EQ(param_of(detok(Json::object())), "tokens");
}

TEST(OpenAiApiTest, ChatUsesThePlainTemplate) {
  const Json body{{"messages",
                   {{{"role", "system"}, {"content", "be brief"}},
                    {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi"}}}}}}},
                  {"max_tokens", 4}};
  const GenerateCall call = parse_chat_request(body, tokenizer(), ChatTemplate::kPlain, limits());
  EXPECT_TRUE(call.chat);
  const std::vector<ChatMessage> messages{{"system", "be brief"}, {"user", "hi"}};
  EXPECT_EQ(apply_chat_template(messages, ChatTemplate::kPlain), "system: be brief\nuser: hi\nassistant:");
  std::vector<int32_t> ids = tokenizer().encode("system: be brief\nuser: hi\nassistant:", true);
  EXPECT_EQ(call.prompts.at(0), std::vector<int64_t>(ids.begin(), ids.end()));
  EXPECT_EQ(
      apply_chat_template(messages, ChatTemplate::kChatml),
      "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  // Without max_tokens, chat may use the rest of the context.
  const GenerateCall open = parse_chat_request(Json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}},
                                               tokenizer(), ChatTemplate::kPlain, limits());
  EXPECT_EQ(open.sampling.max_new_tokens + static_cast<int64_t>(open.prompts[0].size()), 256);
  EXPECT_EQ(param_of([&] {
              parse_chat_request(Json{{"messages", {{{"role", "tool"}, {"content", "x"}}}}}, tokenizer(),
                                 ChatTemplate::kPlain, limits());
            }),
            "messages[0].role");
  EXPECT_EQ(
      param_of([&] {
        parse_chat_request(Json{{"messages", Json::array()}}, tokenizer(), ChatTemplate::kPlain, limits());
      }),
      "messages");
}

TEST(OpenAiApiTest, DetectsChatTemplateFromTokenizerConfig) {
  testing::TempDir dir;
  EXPECT_EQ(detect_chat_template(dir.path()), ChatTemplate::kPlain);
  testing::write_text_file(
      dir / "tokenizer_config.json",
      R"({"chat_template": "{% for m in messages %}<|im_start|>{{m.role}}{% endfor %}"})");
  EXPECT_EQ(detect_chat_template(dir.path()), ChatTemplate::kChatml);
  EXPECT_EQ(parse_chat_template("llama3"), ChatTemplate::kLlama3);
  EXPECT_THROW(parse_chat_template("jinja"), InvalidArgument);
}

TEST(OpenAiApiTest, ResponseShapes) {
  const std::vector<Choice> choices{{.index = 0, .text = "abc", .finish = FinishReason::kLength}};
  const OrderedJson c =
      completion_response("cmpl-1", 5, "m", choices, {.prompt_tokens = 3, .completion_tokens = 2});
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "abc");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c["usage"]["total_tokens"], 5);
  const OrderedJson chat = chat_response("chatcmpl-1", 5, "m", choices, {});
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "abc");
  const OrderedJson first = chat_chunk("x", 5, "m", 0, "", std::nullopt, true);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  const OrderedJson last = chat_chunk("x", 5, "m", 0, "", FinishReason::kStop);
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const ApiError e(404, "no such model", "model", "model_not_found");
  const OrderedJson err = error_body(e);
  EXPECT_EQ(err["error"]["type"], "not_found_error");
  EXPECT_EQ(err["error"]["param"], "model");
  EXPECT_EQ(err["error"]["code"], "model_not_found");
  EXPECT_TRUE(error_body(ApiError(400, "x"))["error"]["param"].is_null());
  std::vector<AdapterInfo> adapters(1);
  adapters[0].name = "a";
  const OrderedJson models = models_response("base", 1, 256, adapters);
  EXPECT_TRUE(models["data"][0]["parent"].is_null());
  EXPECT_EQ(models["data"][1]["id"], "a");
  EXPECT_EQ(models["data"][1]["parent"], "base");
}

TEST(OpenAiApiTest, ErrorsMapToStatuses) {
  auto status = [](auto thrower) { return to_api_error(std::make_exception_ptr(thrower)).status(); };
  EXPECT_EQ(status(InvalidArgument("x")), 400);
  EXPECT_EQ(status(NotFound("x")), 404);
  EXPECT_EQ(status(Corruption("x")), 500);
  EXPECT_EQ(status(std::runtime_error("secret detail")), 500);
  EXPECT_EQ(std::string(to_api_error(std::make_exception_ptr(std::runtime_error("secret"))).what()),
            "internal server error");
}

TEST(OpenAiApiTest, MetricsHaveEveryFamily) {
  EngineStats stats;
  stats.scheduler.waiting = 3;
  stats.ttft_bounds = {0.1, 1.0};
  stats.ttft_counts = {1, 2, 2};
  stats.ttft_sum = 0.5;
  stats.ttft_count = 2;
  HttpCounters http;
  http.responses[429] = 4;
  const std::string text = prometheus_metrics(stats, http);
  for (const char* needle :
       {"# TYPE lowrank_queue_length gauge\nlowrank_queue_length 3\n", "lowrank_running_requests ",
        "lowrank_tokens_per_second ", "# TYPE lowrank_time_to_first_token_seconds histogram",
        "lowrank_time_to_first_token_seconds_bucket{le=\"0.1\"} 1\n",
        "lowrank_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n",
        "lowrank_time_to_first_token_seconds_sum 0.5\n", "lowrank_time_to_first_token_seconds_count 2\n",
        "lowrank_adapters_resident ", "lowrank_adapters_loaded ", "lowrank_pool_pages{state=\"used\"} ",
        "lowrank_requests_total ", "lowrank_requests_queue_full_total ", "lowrank_requests_cancelled_total ",
        "lowrank_http_responses_total{code=\"429\"} 4\n"})
    EXPECT_NE(text.find(needle), std::string::npos) << needle;
}

TEST(ServerSecurityTest, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("secret-key", "secret-key"));
  EXPECT_FALSE(constant_time_equal("secret-kex", "secret-key"));
  EXPECT_FALSE(constant_time_equal("secret", "secret-key"));
  EXPECT_FALSE(constant_time_equal("secret-key-and-more", "secret-key"));
  EXPECT_FALSE(constant_time_equal("", "secret-key"));
  EXPECT_TRUE(constant_time_equal("", ""));
}

}  // namespace
}  // namespace lowrank::serve
