// DCNv2 inference (nn/ctr.h) at Criteo's shape — 26 categorical fields (vocabularies 10 … 10⁵,
// embeddings 16), 13 numeric, DNN 400-400-400, 2 cross layers — timed at batch 1, 512 and 4096 for
// the dense model and for AFM at 3× fewer parameters (compress/ctr_compression.h), interleaved in one
// run. The model and one batch of rows are written to --model-out so that bench/peers/ctr.py times
// PyTorch eager on the same weights and rows (target, issue: ≥ 3× PyTorch at batch 1, ≥ 1× at 4096).
//
//   build/bin/bench_ctr [--out bench/results/ctr_ours.json] [--model-out DIR] [--repeats 20]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "lowrank/compress/ctr_compression.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/ctr_synthetic.h"
#include "lowrank/nn/ctr.h"
#include "timing.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::string out = "bench/results/ctr_ours.json", model_out;
  int repeats = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--model-out") == 0) model_out = argv[i + 1];
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::stoi(argv[i + 1]);
  }
  lowrank::data::CtrSyntheticOptions o;
  o.train_rows = 20000;
  o.test_rows = 4096;
  const lowrank::data::CtrSynthetic d = lowrank::data::generate_ctr_synthetic(o);
  lowrank::nn::CtrConfig c;
  c.schema = d.schema;  // dcnv2, embeddings 16, DNN 400-400-400, 2 cross layers: the defaults
  lowrank::nn::CtrModel dense = lowrank::nn::CtrModel::random(c, 0);
  {
    // Weights of a trained scale (the initial N(0, 1e-4) ones would make every layer's outputs
    // nearly constant, which changes nothing for speed but makes AFM's ranks meaningless).
    at::NoGradGuard g;
    at::manual_seed(0);
    for (auto& [name, t] : dense.parameters()) t.copy_(at::randn(t.sizes()) * 0.05);
  }
  lowrank::nn::CtrModel afm = dense;
  lowrank::compress::CtrCompressOptions co;
  co.factor = 3;
  const auto report = lowrank::compress::compress_ctr_model(afm, d.train, co);
  if (!model_out.empty()) {
    fs::remove_all(model_out);
    dense.save(model_out);
    const std::vector<lowrank::NamedTensor> rows = {{"sparse", d.test.sparse}, {"dense", d.test.dense}};
    lowrank::save_safetensors(fs::path(model_out) / "rows.safetensors", rows);
    at::NoGradGuard g;
    const std::vector<lowrank::NamedTensor> logits = {{"logits", dense.forward(d.test)}};
    lowrank::save_safetensors(fs::path(model_out) / "logits.safetensors", logits);
  }
  std::printf("DCNv2 inference, %d threads: dense (%lld parameters) vs AFM 3x (%lld)\n",
              at::get_num_threads(), static_cast<long long>(dense.parameter_count()),
              static_cast<long long>(afm.parameter_count()));
  std::printf("%6s %12s %12s %10s\n", "batch", "dense_us", "afm3x_us", "dense/afm");
  lowrank::Json rows = lowrank::Json::array();
  for (int64_t batch : {1, 512, 4096}) {
    const lowrank::data::CtrData b = d.test.slice(0, batch);
    const int reps = batch == 1 ? repeats * 20 : repeats;
    const std::vector<double> t = lowrank::bench::interleaved_median_seconds({[&] {
                                                                                c10::InferenceMode g;
                                                                                dense.forward(b);
                                                                              },
                                                                              [&] {
                                                                                c10::InferenceMode g;
                                                                                afm.forward(b);
                                                                              }},
                                                                             reps);
    std::printf("%6lld %12.1f %12.1f %10.2f\n", static_cast<long long>(batch), t[0] * 1e6, t[1] * 1e6,
                t[0] / t[1]);
    rows.push_back({{"batch", batch}, {"dense_seconds", t[0]}, {"afm3x_seconds", t[1]}});
  }
  lowrank::write_json_file(out, lowrank::Json{{"threads", at::get_num_threads()},
                                              {"repeats", repeats},
                                              {"dense_parameters", dense.parameter_count()},
                                              {"afm3x_parameters", afm.parameter_count()},
                                              {"factor", report.to_json()["factor"]},
                                              {"rows", rows}});
  return 0;
}
