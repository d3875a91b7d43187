// `lowrank retrieve`: multi-vector retrieval with CRISP (train/crisp.h; docs/methods/crisp.md).
//   lowrank retrieve train --out DIR [--method colbert|crisp] [--clusters fixed:8x32|relative:4]
//                          [--corpus gcide] [--train-pairs 20000] [--test-queries 2000]
//                          [--test-documents 10000] [--data-seed 0] [--vocab-size 4096]
//                          [--hidden 64] [--layers 2] [--heads 4] [--dim 32] [--steps N | --epochs E]
//                          [--batch-size 32] [--lr 1e-3] ... [--init MODEL] [--resume]
//     Builds inverse-cloze pairs from the corpus (data/inverse_cloze.h), trains a BPE tokenizer on
//     the training pairs, trains the encoder: OUT/model (config.json, model.safetensors,
//     tokenizer.json, retrieval_data.json: where its test split comes from), OUT/run, OUT/train.json.
//   lowrank retrieve index --model DIR --out INDEX [--reduce none|kmeans:S|tail:r|spacing:r] [--fp16]
//     Encodes the model's test documents (or one document per line of --documents FILE).
//   lowrank retrieve eval --model DIR --index INDEX [--k 10]
//     MRR@k and Recall@k of the model's test queries, reduced as the index was.
// Parsing only: the work is the library's.
#include <cmath>
#include <iostream>
#include <memory>
#include <sstream>

#include "apps/lowrank/loop_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/bpe_trainer.h"
#include "lowrank/data/corpus.h"
#include "lowrank/data/inverse_cloze.h"
#include "lowrank/nn/multivector.h"
#include "lowrank/nn/multivector_index.h"
#include "lowrank/train/crisp.h"
#include "lowrank/train/epoch_loop.h"
#include "lowrank/train/retrieval_eval.h"

namespace lowrank::cli {

namespace {

namespace fs = std::filesystem;

constexpr const char* kDataFile = "retrieval_data.json";

struct DataFlags {
  std::string corpus = "gcide";
  int64_t train_pairs = 20000, test_queries = 2000, test_documents = 10000, min_query_words = 5;
  int64_t max_query_tokens = 32, max_document_tokens = 128;
  uint64_t seed = 0;
};

OrderedJson data_json(const DataFlags& d) {
  return OrderedJson{{"corpus", d.corpus},
                     {"train_pairs", d.train_pairs},
                     {"test_queries", d.test_queries},
                     {"test_documents", d.test_documents},
                     {"min_query_words", d.min_query_words},
                     {"max_query_tokens", d.max_query_tokens},
                     {"max_document_tokens", d.max_document_tokens},
                     {"seed", d.seed}};
}

DataFlags data_from_model(const fs::path& model) {
  const fs::path path = model / kDataFile;
  LR_CHECK(
      fs::exists(path), NotFound, path.string(),
      " is missing: not a model written by `lowrank retrieve train` (give --documents for other models)");
  const Json j = read_json_file(path);
  DataFlags d;
  try {
    d.corpus = j.at("corpus").get<std::string>();
    d.train_pairs = j.at("train_pairs").get<int64_t>();
    d.test_queries = j.at("test_queries").get<int64_t>();
    d.test_documents = j.at("test_documents").get<int64_t>();
    d.min_query_words = j.at("min_query_words").get<int64_t>();
    d.max_query_tokens = j.at("max_query_tokens").get<int64_t>();
    d.max_document_tokens = j.at("max_document_tokens").get<int64_t>();
    d.seed = j.at("seed").get<uint64_t>();
  } catch (const Json::exception& e) {
    throw Corruption(str(path.string(), ": ", e.what()));
  }
  return d;
}

data::InverseClozeData make_data(const DataFlags& d) {
  data::InverseClozeOptions o;
  o.train_pairs = d.train_pairs;
  o.test_queries = d.test_queries;
  o.test_documents = d.test_documents;
  o.min_query_words = d.min_query_words;
  o.seed = d.seed;
  return data::make_inverse_cloze(data::read_corpus(d.corpus), o);
}

struct TrainFlags {
  DataFlags data;
  std::string out, method = "colbert", clusters = "none", tokenizer, init;
  int64_t vocab_size = 4096, hidden = 64, layers = 2, heads = 4, dim = 32;
  LoopFlags loop{.batch_size = 32, .warmup = 50, .lr = 1e-3, .min_lr = 1e-5, .weight_decay = 0.01};
};

void run_train(const TrainFlags& flags, const GlobalOptions& global) {
  if (global.json) ProgressBar::set_enabled(false);
  train::RetrievalTrainConfig config;
  config.method = flags.method;
  config.clusters = train::ClusterSpec::parse(flags.clusters);
  config.cluster_seed = flags.loop.seed;
  config.epochs = flags.loop.epochs;
  config.trainer = flags.loop.trainer_config();

  const fs::path out(flags.out);
  if (!flags.init.empty()) {
    // Continuing an encoder on other pairs would let its test documents leak into training.
    const OrderedJson mine = data_json(flags.data), theirs = data_json(data_from_model(flags.init));
    LR_CHECK(mine == theirs, InvalidArgument, "--init ", flags.init, " was trained on the pairs of ",
             theirs.dump(), "; these flags give ", mine.dump(), " (pass the same data flags)");
  }
  const data::InverseClozeData d = make_data(flags.data);
  const data::Tokenizer tokenizer = [&] {
    if (!flags.init.empty()) return data::Tokenizer::load(fs::path(flags.init) / "tokenizer.json");
    if (!flags.tokenizer.empty()) return data::Tokenizer::load(flags.tokenizer);
    data::BpeTrainerOptions o;
    o.vocab_size = flags.vocab_size;
    o.special_tokens = {"<pad>"};
    data::BpeTrainer trainer(o);
    for (const std::string& t : d.train_documents) trainer.feed(t);
    for (const std::string& t : d.train_queries) trainer.feed(t);
    return trainer.train();
  }();
  const train::TokenizedTexts queries =
      train::tokenize_texts(tokenizer, d.train_queries, flags.data.max_query_tokens);
  const train::TokenizedTexts documents =
      train::tokenize_texts(tokenizer, d.train_documents, flags.data.max_document_tokens);
  const int64_t intermediate = 64 * ((8 * flags.hidden / 3 + 63) / 64);
  const Json model_config = nn::multivector_config(
      tokenizer.vocab_size(), flags.hidden, flags.layers, flags.heads, intermediate,
      std::max(flags.data.max_query_tokens, flags.data.max_document_tokens), flags.dim);
  nn::MultiVectorEncoder encoder = flags.init.empty()
                                       ? nn::MultiVectorEncoder::random(model_config, flags.loop.seed)
                                       : nn::MultiVectorEncoder::load(flags.init);
  fs::create_directories(out);
  const train::RetrievalTrainResult r =
      train::train_retrieval(encoder, queries, documents, config, out / "run", flags.loop.resume);
  if (!r.finished) return;
  {
    StagedDirectory staged(out / "model");
    encoder.save(staged.path());
    tokenizer.save(staged.path() / "tokenizer.json");
    write_json_file(staged.path() / kDataFile, data_json(flags.data));
    staged.commit();
  }
  const auto mean_length = [](const train::TokenizedTexts& t) {
    return t.lengths.to(at::kDouble).mean().item<double>();
  };
  OrderedJson report;
  report["model"] = (out / "model").string();
  report["method"] = flags.method;
  report["clusters"] = config.clusters.to_string();
  report["steps"] = r.step;
  report["pairs"] = queries.size();
  report["query_tokens_mean"] = mean_length(queries);
  report["document_tokens_mean"] = mean_length(documents);
  report["final_loss"] = r.steps.empty() ? 0.0 : r.steps.back().loss;
  // The trainer's steps as the run resolved them (with --epochs, from the epochs and pair count).
  train::RetrievalTrainConfig resolved = config;
  resolved.trainer = train::epoch_trainer_config(config.trainer, config.epochs, queries.size());
  report["config"] = resolved.to_json();
  report["data"] = data_json(flags.data);
  write_json_file(out / "train.json", report);
  print_report(report, global,
               str("trained ", flags.method, " (", config.clusters.to_string(), ", ", r.step, " steps on ",
                   queries.size(), " pairs) -> ", (out / "model").string(), "\n"));
}

struct IndexFlags {
  std::string model, out, reduce = "none", documents;
  bool fp16 = false;
  int64_t batch_size = 64;
};

void run_index(const IndexFlags& flags, const GlobalOptions& global) {
  if (global.json) ProgressBar::set_enabled(false);
  train::VectorReduction reduction = train::VectorReduction::parse(flags.reduce);
  const nn::MultiVectorEncoder encoder = nn::MultiVectorEncoder::load(flags.model);
  const data::Tokenizer tokenizer = data::Tokenizer::load(fs::path(flags.model) / "tokenizer.json");
  std::vector<std::string> texts;
  int64_t max_tokens = 128;
  Json info = Json::object();
  if (!flags.documents.empty()) {
    const std::string content = read_text_file(flags.documents);
    std::istringstream lines(content);
    for (std::string line; std::getline(lines, line);)
      if (!line.empty()) texts.push_back(line);
    LR_CHECK(!texts.empty(), InvalidArgument, "--documents ", flags.documents,
             ": no documents (one per line)");
    if (fs::exists(fs::path(flags.model) / kDataFile))
      max_tokens = data_from_model(flags.model).max_document_tokens;
    info["documents"] = flags.documents;
  } else {
    const DataFlags d = data_from_model(flags.model);
    texts = make_data(d).test_documents;
    max_tokens = d.max_document_tokens;
    info["documents"] = "test split";
    info["data"] = data_json(d);
  }
  reduction.seed = 0;
  const nn::MultiVectorIndex index = train::build_index(
      encoder, train::tokenize_texts(tokenizer, texts, max_tokens), reduction, flags.batch_size);
  info["reduction"] = reduction.to_string();
  info["model"] = flags.model;
  index.save(flags.out, flags.fp16, info);
  OrderedJson report;
  report["out"] = flags.out;
  report["documents"] = index.documents();
  report["vectors"] = index.vectors();
  report["vectors_per_document"] =
      static_cast<double>(index.vectors()) / static_cast<double>(index.documents());
  report["reduction"] = reduction.to_string();
  print_report(report, global,
               str("indexed ", index.documents(), " documents, ", index.vectors(), " vectors (",
                   reduction.to_string(), ") -> ", flags.out, "\n"));
}

struct EvalFlags {
  std::string model, index;
  int64_t k = 10, batch_size = 64;
};

void run_eval(const EvalFlags& flags, const GlobalOptions& global) {
  const Json config = nn::MultiVectorIndex::read_config(flags.index);
  const Json info = config.value("info", Json::object());
  LR_CHECK(info.value("documents", "") == "test split", InvalidArgument, "--index ", flags.index,
           ": built from ", info.value("documents", "?"),
           ", not from the model's test split; eval needs the queries "
           "of the split it indexes");
  const DataFlags d = data_from_model(flags.model);
  LR_CHECK(info.contains("data") && info.at("data") == Json(data_json(d)), InvalidArgument, "--index ",
           flags.index, ": its documents come from another data split (", info.value("data", Json()).dump(),
           ") than --model ", flags.model, "'s (", data_json(d).dump(), ")");
  const train::VectorReduction reduction = train::VectorReduction::parse(info.value("reduction", "none"));
  const nn::MultiVectorEncoder encoder = nn::MultiVectorEncoder::load(flags.model);
  const data::Tokenizer tokenizer = data::Tokenizer::load(fs::path(flags.model) / "tokenizer.json");
  const nn::MultiVectorIndex index = nn::MultiVectorIndex::load(flags.index);
  const data::InverseClozeData data = make_data(d);
  const train::RetrievalMetrics m = train::evaluate_retrieval(
      encoder, index, train::tokenize_texts(tokenizer, data.test_queries, d.max_query_tokens),
      data.test_positives, reduction, flags.k, flags.batch_size);
  OrderedJson report = m.to_json();
  report["reduction"] = reduction.to_string();
  report["index"] = flags.index;
  print_report(
      report, global,
      str("MRR@", m.k, " ", m.mrr, ", Recall@", m.k, " ", m.recall, " over ", m.queries, " queries (",
          m.vectors_per_document, " vectors per document, ", reduction.to_string(), ")\n"));
}

}  // namespace

VerbRunner add_retrieve(CLI::App& app, const GlobalOptions& global) {
  auto* cmd =
      app.add_subcommand("retrieve", "Multi-vector retrieval: ColBERT and CRISP (docs/methods/crisp.md)");
  cmd->require_subcommand(1);
  auto mode = std::make_shared<std::string>();

  auto tr = std::make_shared<TrainFlags>();
  auto* train = cmd->add_subcommand("train", "Train a multi-vector encoder on inverse-cloze pairs");
  train->add_option("--out", tr->out, "Output directory (model/, run/, train.json)")->required();
  train->add_option("--method", tr->method, "colbert | crisp")->capture_default_str();
  train->add_option("--clusters", tr->clusters, "crisp: fixed:CqxCd | relative:r")->capture_default_str();
  train->add_option("--corpus", tr->data.corpus, "Corpus name or path (lowrank data corpora)")
      ->capture_default_str();
  train->add_option("--train-pairs", tr->data.train_pairs, "Training pairs")->capture_default_str();
  train->add_option("--test-queries", tr->data.test_queries, "Test queries")->capture_default_str();
  train->add_option("--test-documents", tr->data.test_documents, "Test corpus size, positives included")
      ->capture_default_str();
  train->add_option("--min-query-words", tr->data.min_query_words, "Shortest query sentence")
      ->capture_default_str();
  train->add_option("--max-query-tokens", tr->data.max_query_tokens, "Query truncation")
      ->capture_default_str();
  train->add_option("--max-document-tokens", tr->data.max_document_tokens, "Document truncation")
      ->capture_default_str();
  train->add_option("--data-seed", tr->data.seed, "Seed of the pairs and splits")->capture_default_str();
  train->add_option(
      "--init", tr->init,
      "Start from this encoder (and its tokenizer), trained on the same pairs: CRISP fine-tunes a "
      "trained multi-vector model");
  train->add_option("--tokenizer", tr->tokenizer, "tokenizer.json to use instead of training one");
  train->add_option("--vocab-size", tr->vocab_size, "BPE vocabulary trained on the pairs")
      ->capture_default_str();
  train->add_option("--hidden", tr->hidden, "Trunk width")->capture_default_str();
  train->add_option("--layers", tr->layers, "Trunk layers")->capture_default_str();
  train->add_option("--heads", tr->heads, "Attention heads")->capture_default_str();
  train->add_option("--dim", tr->dim, "Vector dimension")->capture_default_str();
  tr->loop.add_to(*train, "pairs", "the weights, the pair order and the k-means++ draws");
  train->callback([tr, train, mode] {
    if (!tr->init.empty())
      for (const char* shape : {"--tokenizer", "--vocab-size", "--hidden", "--layers", "--heads", "--dim"})
        if (train->count(shape) > 0)
          throw CLI::ValidationError(shape, "an --init encoder keeps its own tokenizer and shape");
    *mode = "train";
  });

  auto ix = std::make_shared<IndexFlags>();
  auto* index = cmd->add_subcommand("index", "Encode documents into an exact multi-vector index");
  index->add_option("--model", ix->model, "Encoder directory")->required();
  index->add_option("--out", ix->out, "Index directory to write")->required();
  index
      ->add_option("--reduce", ix->reduce,
                   "none | kmeans:fixed:CqxCd | kmeans:relative:r | tail:r | spacing:r")
      ->capture_default_str();
  index->add_option("--documents", ix->documents, "One document per line (default: the model's test split)");
  index->add_flag("--fp16", ix->fp16, "Store the vectors as float16");
  index->add_option("--batch-size", ix->batch_size, "Texts per forward pass")->capture_default_str();
  index->callback([mode] { *mode = "index"; });

  auto ev = std::make_shared<EvalFlags>();
  auto* eval = cmd->add_subcommand("eval", "MRR@k and Recall@k of the model's test queries on an index");
  eval->add_option("--model", ev->model, "Encoder directory")->required();
  eval->add_option("--index", ev->index, "Index of the model's test split")->required();
  eval->add_option("--k", ev->k, "Cut-off")->capture_default_str();
  eval->add_option("--batch-size", ev->batch_size, "Texts per forward pass")->capture_default_str();
  eval->callback([mode] { *mode = "eval"; });

  return [=, &global] {
    if (*mode == "train") run_train(*tr, global);
    if (*mode == "index") run_index(*ix, global);
    if (*mode == "eval") run_eval(*ev, global);
  };
}

}  // namespace lowrank::cli
