// `lowrank tokenize`: encode text to token ids, decode ids to text, or train a byte-level BPE
// tokenizer, with Hugging Face tokenizer.json files (lowrank/data/tokenizer.h, bpe_trainer.h).
#include <charconv>
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/data/bpe_trainer.h"
#include "lowrank/data/tokenizer.h"

namespace lowrank::cli {

namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::optional<std::string> text;
  std::optional<std::string> input;
  std::optional<std::string> ids;
  std::optional<std::string> batch;
  bool special = false;
  bool skip_special = false;
  std::vector<std::string> train;
  std::string output;
  int64_t vocab_size = 30000;
  int64_t min_frequency = 0;
  std::vector<std::string> special_tokens;
  std::string pre_tokenizer = "gpt2";
};

// "1,2, 3" -> {1, 2, 3}; InvalidArgument names the item at fault.
std::vector<int32_t> parse_ids(std::string_view list) {
  std::vector<int32_t> ids;
  if (list.find_first_not_of(" \t") == std::string_view::npos) return ids;
  std::size_t begin = 0;
  while (begin <= list.size()) {
    std::size_t end = list.find(',', begin);
    if (end == std::string_view::npos) end = list.size();
    std::string_view item = list.substr(begin, end - begin);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (!(item.empty() && end == list.size() && !ids.empty())) {  // tolerate one trailing comma
      int64_t value = -1;
      auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
      LR_CHECK(!item.empty() && ec == std::errc() && ptr == item.data() + item.size() && value >= 0 &&
                   value < (int64_t{1} << 31),
               InvalidArgument, "--ids: \"", item, "\" is not a token id (expected e.g. --ids 1,2,3)");
      ids.push_back(static_cast<int32_t>(value));
    }
    begin = end + 1;
  }
  return ids;
}

void run_train(const TokenizeArgs& args, const GlobalOptions& global) {
  LR_CHECK(!args.output.empty(), InvalidArgument,
           "--train needs --output FILE (the tokenizer.json to write)");
  data::BpeTrainerOptions options;
  options.vocab_size = args.vocab_size;
  options.min_frequency = args.min_frequency;
  options.special_tokens = args.special_tokens;
  options.pre_tokenizer = args.pre_tokenizer;
  data::BpeTrainer trainer(options);
  for (const auto& file : args.train) trainer.feed_file(file);
  const data::Tokenizer tokenizer = trainer.train();
  tokenizer.save(args.output);
  if (global.json) {
    OrderedJson report;
    report["output"] = args.output;
    report["vocab_size"] = tokenizer.vocab_size();
    report["words"] = trainer.word_counts().size();
    std::cout << report.dump(2) << "\n";
  } else {
    std::cout << "trained a " << tokenizer.vocab_size() << "-token byte-level BPE (" << args.pre_tokenizer
              << ") on " << trainer.word_counts().size() << " distinct words -> " << args.output << "\n";
  }
}

// --batch FILE: a JSON list whose strings are encoded and whose id lists are decoded; prints a
// JSON list of {"ids", "tokens"} / {"text"} in the same order.
void run_batch(const data::Tokenizer& tokenizer, const TokenizeArgs& args) {
  const Json items = read_json_file(*args.batch);
  LR_CHECK(items.is_array(), InvalidArgument, *args.batch,
           ": --batch expects a JSON list of strings and id lists");
  OrderedJson results = OrderedJson::array();
  for (std::size_t k = 0; k < items.size(); ++k) {
    const Json& item = items[k];
    OrderedJson result;
    if (item.is_string()) {
      const std::vector<int32_t> ids = tokenizer.encode(item.get<std::string>(), args.special);
      std::vector<std::string> tokens;
      for (int32_t id : ids) tokens.push_back(tokenizer.id_to_token(id));
      result["ids"] = ids;
      result["tokens"] = tokens;
    } else {
      std::vector<int32_t> ids;
      LR_CHECK(item.is_array(), InvalidArgument, *args.batch, ": item ", k,
               " is neither a string nor a list of ids");
      for (const auto& id : item) {
        LR_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (int64_t{1} << 31),
                 InvalidArgument, *args.batch, ": item ", k, " holds ", id.dump(),
                 ", which is not a token id");
        ids.push_back(id.get<int32_t>());
      }
      result["text"] = tokenizer.decode(ids, args.skip_special);
    }
    results.push_back(std::move(result));
  }
  std::cout << results.dump(2) << "\n";
}

void run_tokenize(const TokenizeArgs& args, const GlobalOptions& global) {
  if (!args.train.empty()) {
    LR_CHECK(!args.text && !args.input && !args.ids && !args.batch, InvalidArgument,
             "--train cannot be combined with --text, --input, --ids or --batch");
    run_train(args, global);
    return;
  }
  const int given = int(args.text.has_value()) + int(args.input.has_value()) + int(args.ids.has_value()) +
                    int(args.batch.has_value());
  LR_CHECK(given == 1, InvalidArgument,
           "give exactly one of --text TEXT, --input FILE, --ids 1,2,3, --batch FILE (or --train)");
  LR_CHECK(!args.tokenizer.empty(), InvalidArgument, "--tokenizer FILE is required");
  const data::Tokenizer tokenizer = data::Tokenizer::load(args.tokenizer);

  if (args.batch) {
    run_batch(tokenizer, args);
    return;
  }
  if (args.ids) {
    const std::vector<int32_t> ids = parse_ids(*args.ids);
    const std::string text = tokenizer.decode(ids, args.skip_special);
    if (global.json) {
      OrderedJson report;
      report["text"] = text;
      report["ids"] = ids;
      std::cout << report.dump(2) << "\n";
    } else {
      std::cout << text << "\n";
    }
    return;
  }

  const std::string text = args.text ? *args.text : read_text_file(*args.input);
  const std::vector<int32_t> ids = tokenizer.encode(text, args.special);
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) tokens.push_back(tokenizer.id_to_token(id));
  if (global.json) {
    OrderedJson report;
    report["ids"] = ids;
    report["tokens"] = tokens;
    std::cout << report.dump(2) << "\n";
  } else {
    std::cout << "ids (" << ids.size() << "):";
    for (int32_t id : ids) std::cout << " " << id;
    std::cout << "\ntokens:";
    for (const auto& token : tokens) std::cout << " " << Json(token).dump();
    std::cout << "\n";
  }
}

}  // namespace

VerbRunner add_tokenize(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "tokenize", "Encode text to token ids, decode ids to text, or train a byte-level BPE tokenizer");
  auto args = std::make_shared<TokenizeArgs>();
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.json, or a model directory holding one");
  cmd->add_option("--text", args->text, "Text to encode");
  cmd->add_option("--input", args->input, "File whose whole content is encoded");
  cmd->add_option("--ids", args->ids, "Comma-separated token ids to decode, e.g. 1,2,3");
  cmd->add_option("--batch", args->batch,
                  "JSON file: a list of texts to encode and id lists to decode (prints a JSON list)");
  cmd->add_flag("--special", args->special, "Encode: add the post-processor's special tokens (e.g. bos)");
  cmd->add_flag("--skip-special", args->skip_special, "Decode: leave special tokens out");
  cmd->add_option("--train", args->train,
                  "Train a byte-level BPE on these text files (one sequence per line)");
  cmd->add_option("--output", args->output, "Train: the tokenizer.json to write");
  cmd->add_option("--vocab-size", args->vocab_size, "Train: vocabulary size, special tokens included")
      ->capture_default_str();
  cmd->add_option("--min-frequency", args->min_frequency, "Train: pairs seen fewer times are not merged")
      ->capture_default_str();
  cmd->add_option("--special-token", args->special_tokens,
                  "Train: a special token (repeatable; ids 0, 1, ...)");
  cmd->add_option("--pre-tokenizer", args->pre_tokenizer, "Train: gpt2, llama3 or qwen2")
      ->capture_default_str();
  return [args, &global] { run_tokenize(*args, global); };
}

}  // namespace lowrank::cli
