// `lowrank ctr`: click-through-rate models and their compression by output features (AFM).
//   lowrank ctr generate --out DATA [--train-rows 1000000] [--test-rows 200000] [--seed 0] ...
//   lowrank ctr train --data DATA --out DIR [--model dnn|deepfm|dcnv2] [--embedding-dim 16]
//                     [--hidden 400,400,400] [--cross-layers 2] [--epochs 1] [--batch-size 1024]
//                     [--lr 1e-3] [--init MODEL] [--resume]
//       DIR/model (ctr_config.json + model.safetensors), DIR/run (metrics.jsonl, checkpoints/),
//       DIR/train.json
//   lowrank ctr eval --model MODEL --data DATA [--split test] [--batch-size 512]
//   lowrank ctr compress --model MODEL --data DATA --out MODEL2 --method afm|svd (--ratio R | --factor F)
//                        [--relu] [--uncentred] [--layers embeddings,dnn,cross] [--calib-rows N]
// (src/lowrank/nn/ctr.h, compress/afm.h, compress/ctr_compression.h, train/ctr.h; docs/methods/afm.md.)
// Parsing only: the work is the library's.
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "apps/lowrank/loop_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/compress/ctr_compression.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/ctr_data.h"
#include "lowrank/data/ctr_synthetic.h"
#include "lowrank/eval/binary_metrics.h"
#include "lowrank/nn/ctr.h"
#include "lowrank/train/ctr.h"

namespace lowrank::cli {

namespace {

namespace fs = std::filesystem;

std::vector<int64_t> parse_units(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    LR_CHECK(used == item.size() && !item.empty(), InvalidArgument, "--hidden \"", text,
             "\": a comma-separated list of integers");
    out.push_back(v);
  }
  return out;
}

// A model reads only data of its own fields (names, order and vocabularies).
void check_fields(const nn::CtrModel& model, const data::CtrSchema& schema, const std::string& what,
                  const std::string& data) {
  LR_CHECK(model.config().schema.to_json() == schema.to_json(), InvalidArgument, what,
           ": the model's fields differ from ", data, "'s");
}

struct GenerateFlags {
  std::string out;
  data::CtrSyntheticOptions options;
};

void run_generate(const GenerateFlags& flags, const GlobalOptions& global) {
  flags.options.check();
  if (global.json) ProgressBar::set_enabled(false);
  StagedDirectory probe(flags.out);  // a bad --out fails before the work
  const data::CtrSynthetic d = data::generate_ctr_synthetic(flags.options);
  OrderedJson generator = flags.options.to_json();
  // The teacher's own AUC on the test rows: the ceiling a model can reach.
  const double teacher_auc = eval::roc_auc(d.test_probability, d.test.labels);
  generator["teacher_test_auc"] = teacher_auc;
  save_ctr_dataset(flags.out, d.schema, d.train, d.test, Json::parse(generator.dump()));
  const OrderedJson report{{"out", flags.out},
                           {"train_rows", d.train.rows()},
                           {"test_rows", d.test.rows()},
                           {"train_ctr", d.train.ctr()},
                           {"test_ctr", d.test.ctr()},
                           {"teacher_test_auc", teacher_auc},
                           {"sparse_fields", d.schema.sparse_count()},
                           {"dense_fields", d.schema.dense_count()}};
  std::ostringstream text;
  text << "generated " << d.train.rows() << " train and " << d.test.rows() << " test rows (CTR "
       << d.train.ctr() << ", teacher AUC " << teacher_auc << ") -> " << flags.out << "\n";
  print_report(report, global, text.str());
}

struct TrainFlags {
  std::string data, out, model = "dcnv2", hidden = "400,400,400", init;
  int64_t embedding_dim = 16, cross_layers = 2, eval_every = 0;
  // min_lr = lr: a constant rate, as DeepCTR trains; no clipping.
  LoopFlags loop{.batch_size = 1024, .lr = 1e-3, .min_lr = 1e-3, .clip = 0};
};

void run_train(const TrainFlags& flags, const GlobalOptions& global) {
  if (global.json) ProgressBar::set_enabled(false);
  const data::CtrSchema schema = data::load_ctr_schema(flags.data);
  nn::CtrModel model = [&] {
    if (!flags.init.empty()) {
      nn::CtrModel m = nn::CtrModel::load(flags.init);
      check_fields(m, schema, "--init " + flags.init, flags.data);
      return m;
    }
    nn::CtrConfig c;
    c.model_type = flags.model;
    c.schema = schema;
    c.embedding_dim = flags.embedding_dim;
    c.hidden_units = parse_units(flags.hidden);
    c.cross_layers = flags.model == "dcnv2" ? flags.cross_layers : 0;
    return nn::CtrModel::random(c, flags.loop.seed);
  }();
  train::CtrTrainConfig config;
  train::TrainerConfig& tc = config.trainer;
  tc = flags.loop.trainer_config();
  tc.adam.beta2 = 0.999;  // torch.optim.Adam's, as DeepCTR trains
  config.epochs = flags.loop.epochs;
  config.eval_every = flags.eval_every;
  const fs::path out(flags.out);
  fs::create_directories(out);
  const data::CtrData train_rows = data::load_ctr_split(flags.data, schema, "train");
  const data::CtrData test_rows = data::load_ctr_split(flags.data, schema, "test");
  const train::CtrTrainResult r =
      train::train_ctr(model, train_rows, test_rows, config, out / "run", flags.loop.resume);
  if (!r.finished) return;
  if (fs::exists(out / "model")) fs::remove_all(out / "model");
  model.save(out / "model");
  OrderedJson report{{"model", (out / "model").string()},
                     {"model_type", model.config().model_type},
                     {"parameters", model.parameter_count()},
                     {"steps", r.step},
                     {"train_rows", train_rows.rows()},
                     {"oov", train_rows.oov},
                     {"final_loss", r.steps.empty() ? 0.0 : r.steps.back().loss},
                     {"test", r.test.to_json()}};
  write_json_file(out / "train.json", report);
  std::ostringstream text;
  text << "trained " << model.config().model_type << " (" << model.parameter_count() << " parameters, "
       << r.step << " steps): test AUC " << r.test.auc << ", log loss " << r.test.logloss << " -> "
       << (out / "model").string() << "\n";
  print_report(report, global, text.str());
}

struct EvalFlags {
  std::string model, data, split = "test";
  int64_t batch_size = 512;
};

void run_eval(const EvalFlags& flags, const GlobalOptions& global) {
  const nn::CtrModel model = nn::CtrModel::load(flags.model);
  const data::CtrSchema schema = data::load_ctr_schema(flags.data);
  check_fields(model, schema, "--model " + flags.model, flags.data);
  const data::CtrData rows = data::load_ctr_split(flags.data, schema, flags.split);
  const train::CtrEvalResult r = train::evaluate_ctr(model, rows, flags.batch_size);
  OrderedJson report = r.to_json();
  report["split"] = flags.split;
  report["parameters"] = model.parameter_count();
  report["oov"] = rows.oov;
  report["batch_size"] = flags.batch_size;
  report["rows_per_s"] = static_cast<double>(r.rows) / std::max(r.seconds, 1e-9);
  std::ostringstream text;
  text << flags.split << ": AUC " << r.auc << ", log loss " << r.logloss << " over " << r.rows << " rows ("
       << model.parameter_count() << " parameters)\n";
  print_report(report, global, text.str());
}

struct CompressFlags {
  std::string model, data, out, layers = "embeddings,dnn,cross";
  compress::CtrCompressOptions options;
  bool uncentred = false;
};

void run_compress(CompressFlags& flags, const GlobalOptions& global) {
  if (global.json) ProgressBar::set_enabled(false);
  compress::CtrCompressOptions& o = flags.options;
  o.centred = !flags.uncentred;
  o.embeddings = o.dnn = o.cross = false;
  std::stringstream in(flags.layers);
  for (std::string item; std::getline(in, item, ',');) {
    if (item == "embeddings")
      o.embeddings = true;
    else if (item == "dnn")
      o.dnn = true;
    else if (item == "cross")
      o.cross = true;
    else
      throw InvalidArgument(str("--layers: \"", item, "\" (known: embeddings, dnn, cross)"));
  }
  o.check();
  StagedDirectory probe(flags.out);  // a bad --out fails before the work
  nn::CtrModel model = nn::CtrModel::load(flags.model);
  const data::CtrSchema schema = data::load_ctr_schema(flags.data);
  check_fields(model, schema, "--model " + flags.model, flags.data);
  const data::CtrData calibration =
      o.method == "afm" ? data::load_ctr_split(flags.data, schema, "train") : data::CtrData{};
  const compress::CtrCompressReport r = compress::compress_ctr_model(model, calibration, o);
  model.save(flags.out);
  OrderedJson report = r.to_json();
  report["out"] = flags.out;
  std::ostringstream text;
  text << o.method << ": " << r.model_params_before << " -> " << r.model_params_after << " parameters ("
       << static_cast<double>(r.model_params_before) / static_cast<double>(r.model_params_after) << "x) -> "
       << flags.out << "\n";
  print_report(report, global, text.str());
}

}  // namespace

VerbRunner add_ctr(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "ctr", "Click-through-rate models and their compression by AFM (docs/methods/afm.md)");
  cmd->require_subcommand(1);
  auto mode = std::make_shared<std::string>();

  auto gen = std::make_shared<GenerateFlags>();
  auto* g = cmd->add_subcommand("generate", "Synthetic CTR data from a hidden FM + MLP teacher");
  g->add_option("--out", gen->out, "Data directory to write")->required();
  g->add_option("--train-rows", gen->options.train_rows, "Training rows")->capture_default_str();
  g->add_option("--test-rows", gen->options.test_rows, "Test rows")->capture_default_str();
  g->add_option("--sparse-fields", gen->options.sparse_fields, "Categorical fields")->capture_default_str();
  g->add_option("--dense-fields", gen->options.dense_fields, "Numeric fields")->capture_default_str();
  g->add_option("--min-vocab", gen->options.min_vocab, "Smallest vocabulary")->capture_default_str();
  g->add_option("--max-vocab", gen->options.max_vocab, "Largest vocabulary")->capture_default_str();
  g->add_option("--zipf", gen->options.zipf, "Zipf exponent of the ids")->capture_default_str();
  g->add_option("--base-ctr", gen->options.base_ctr, "Mean click probability")->capture_default_str();
  g->add_option("--seed", gen->options.seed, "Seed")->capture_default_str();
  g->callback([mode] { *mode = "generate"; });

  auto tr = std::make_shared<TrainFlags>();
  auto* t = cmd->add_subcommand("train", "Train a DNN, DeepFM or DCNv2 model (or fine-tune one with --init)");
  t->add_option("--data", tr->data, "Data directory (ctr_data.json, train.*, test.*)")->required();
  t->add_option("--out", tr->out, "Output directory (model/, run/, train.json)")->required();
  t->add_option("--model", tr->model, "dnn | deepfm | dcnv2")->capture_default_str();
  t->add_option("--init", tr->init, "Start from this model directory (e.g. an AFM-compressed one)");
  t->add_option("--embedding-dim", tr->embedding_dim, "Embedding size")->capture_default_str();
  t->add_option("--hidden", tr->hidden, "DNN units, comma-separated")->capture_default_str();
  t->add_option("--cross-layers", tr->cross_layers, "DCNv2 cross layers")->capture_default_str();
  t->add_option("--eval-every", tr->eval_every, "Evaluate every N steps (0: at the end)")
      ->capture_default_str();
  // --min-lr defaults to --lr: a constant rate, as DeepCTR trains; the loop never clips.
  tr->loop.add_to(*t, "rows", "the weights and the row order", false);
  t->callback([mode] { *mode = "train"; });

  auto ev = std::make_shared<EvalFlags>();
  auto* e = cmd->add_subcommand("eval", "ROC AUC and log loss of a model on a split");
  e->add_option("--model", ev->model, "Model directory")->required();
  e->add_option("--data", ev->data, "Data directory")->required();
  e->add_option("--split", ev->split, "train | test")->capture_default_str();
  e->add_option("--batch-size", ev->batch_size, "Rows per forward pass")->capture_default_str();
  e->callback([mode] { *mode = "eval"; });

  auto cp = std::make_shared<CompressFlags>();
  auto* c = cmd->add_subcommand("compress", "Compress embeddings and MLP/cross layers by AFM or weight SVD");
  c->add_option("--model", cp->model, "Model directory")->required();
  c->add_option("--data", cp->data, "Data directory (AFM calibrates on its train split)")->required();
  c->add_option("--out", cp->out, "Compressed model directory to write")->required();
  c->add_option("--method", cp->options.method, "afm | svd")->capture_default_str();
  c->add_option("--ratio", cp->options.ratio, "Parameter reduction of the compressed layers, in (0, 1)");
  c->add_option("--factor", cp->options.factor, "Or: the whole model's parameters divided by this (> 1)");
  c->add_flag("--relu", cp->options.relu, "AFM: a ReLU between the two layers (fine-tune after)");
  c->add_flag("--uncentred", cp->uncentred, "AFM: E[y y^T] instead of the covariance, no bias");
  c->add_option("--layers", cp->layers, "Which layers: embeddings,dnn,cross")->capture_default_str();
  c->add_option("--calib-rows", cp->options.calibration_rows, "Calibration rows (0: the whole train split)")
      ->capture_default_str();
  c->callback([mode] { *mode = "compress"; });

  return [=, &global] {
    if (*mode == "generate") run_generate(*gen, global);
    if (*mode == "train") run_train(*tr, global);
    if (*mode == "eval") run_eval(*ev, global);
    if (*mode == "compress") run_compress(*cp, global);
  };
}

}  // namespace lowrank::cli
