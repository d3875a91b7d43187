// Data-parallel training's communication (docs/distributed.md): 2 ranks (threads of this process,
// one intra-op thread each, over loopback Gloo) train the `tiny` pretraining preset's model
// (hidden 128, 4 layers, vocab 2048) on batch 4 × 128 tokens per rank. Per bucket size (DDP's
// 25 MiB default and 1 MiB), timed in turn on both ranks (median of --repeats):
//   backward alone (no Reducer)      : the compute
//   backward with the Reducer        : compute + the communication backward could not hide
//   the same buckets all-reduced alone: the communication
// exposed = (with − alone); overlap = 1 − exposed / communication (clamped to [0, 1]). Also the
// bytes: all-reduced per step per rank (the gradient), moved per rank by a ring (2(N−1)/N × that),
// and the one weight broadcast at the start. Then the scaling model for GaLore's LLaMA-60M shape
// (galore-60m): ring volume per rank and all-reduce time per step against N, on NVLink and 10 GbE
// at their nominal bandwidths, with the exposed part at the overlap measured here with 1 MiB
// buckets (5 per step, as galore-60m has with DDP's 25 MiB). Last, each rank's training-state
// bytes for AdamW and GaLore (rank 32), replicated and under ZeRO-1 (--zero 1).
// Two ranks on two cores cannot show a speed-up; this measures traffic and hiding, not scaling.
//
//   build/bin/bench_dist [--out bench/results/dist.json] [--repeats 15]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <stdlib.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/net.h"
#include "lowrank/dist/gradient_reducer.h"
#include "lowrank/dist/group.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/model.h"
#include "lowrank/train/data_parallel.h"
#include "lowrank/train/pretrain.h"
#include "lowrank/train/trainer.h"

namespace {
using lowrank::Json;
using lowrank::OrderedJson;

lowrank::nn::Model preset_model(const std::string& preset, uint64_t seed) {
  const auto p = lowrank::train::pretrain_preset(preset);
  return lowrank::nn::Model::random(
      lowrank::nn::ModelConfig::from_json(lowrank::train::preset_model_config(p, p.vocab_size), preset),
      seed);
}

int64_t parameter_count(const lowrank::nn::Model& m) {
  int64_t n = 0;
  for (const auto& [name, t] : m.named_tensors()) n += t.numel();
  return n;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Timings {
  double backward = 0, backward_ddp = 0, allreduce = 0;
  lowrank::dist::ReducerStats stats;
};

// One rank's measurements for one bucket size (both ranks run this in lockstep).
Timings measure(lowrank::dist::Group& group, double bucket_mb, int repeats, int64_t batch, int64_t seq) {
  lowrank::nn::Model model = preset_model("tiny", 1);
  std::vector<at::Tensor> params;
  std::vector<std::string> names;
  for (auto& [n, t] : model.named_tensors()) {
    params.push_back(t.requires_grad_(true));
    names.push_back(n);
  }
  lowrank::dist::ReducerOptions ro;
  ro.bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
  lowrank::dist::GradientReducer reducer(group, params, names, ro);
  const at::Tensor windows =
      at::randint(model.config().vocab_size, {batch, seq + 1}, at::TensorOptions().dtype(at::kLong));
  const auto zero = [&] {
    for (at::Tensor& p : params)
      if (p.grad().defined()) p.mutable_grad().zero_();
  };
  std::vector<double> alone, ddp, comm;
  std::vector<at::Tensor> buffers;
  for (int64_t bytes : reducer.stats().bucket_bytes) buffers.push_back(at::ones({bytes / 4}, at::kFloat));
  for (int i = 0; i <= repeats; ++i) {  // the first round warms up (and rebuilds the buckets)
    zero();
    at::Tensor loss = lowrank::train::lm_loss(model, windows);
    group.barrier();
    auto t0 = std::chrono::steady_clock::now();
    loss.backward();
    const double a = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    zero();
    reducer.prepare_for_forward();
    loss = lowrank::train::lm_loss(model, windows);
    reducer.prepare_for_backward();
    group.barrier();
    t0 = std::chrono::steady_clock::now();
    loss.backward();
    const double b = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    group.barrier();
    t0 = std::chrono::steady_clock::now();
    group.all_reduce_sum(buffers);
    const double c = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i == 0) continue;
    alone.push_back(a);
    ddp.push_back(b);
    comm.push_back(c);
  }
  return {median(alone), median(ddp), median(comm), reducer.stats()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string out = "bench/results/dist.json";
  int repeats = 15;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--out") && i + 1 < argc)
      out = argv[++i];
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc)
      repeats = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_dist [--out FILE] [--repeats N]\n");
      return 1;
    }
  }
  if (!lowrank::dist::available()) {
    std::fprintf(stderr, "bench_dist: this build has no data-parallel training (LOWRANK_DIST=OFF)\n");
    return 1;
  }
  at::set_num_threads(1);
  constexpr int kWorld = 2;
  const int64_t batch = 4, seq = 128;
  const lowrank::nn::Model probe = preset_model("tiny", 1);
  const int64_t psi = parameter_count(probe);
  OrderedJson configs = OrderedJson::array();
  double measured_overlap = 0;
  for (const double bucket_mb : {25.0, 1.0}) {
    const int port = lowrank::free_loopback_port();
    std::vector<Timings> t(kWorld);
    std::vector<std::thread> threads;
    for (int r = 0; r < kWorld; ++r)
      threads.emplace_back([&, r] {
        const auto group = lowrank::dist::Group::join(lowrank::dist::World::loopback(r, kWorld, port),
                                                      std::chrono::seconds(60));
        t[r] = measure(*group, bucket_mb, repeats, batch, seq);
      });
    for (auto& th : threads) th.join();
    // Both ranks wait for each other in every step: report the slower one.
    Timings w = t[0];
    for (const Timings& x : t) {
      w.backward = std::max(w.backward, x.backward);
      w.backward_ddp = std::max(w.backward_ddp, x.backward_ddp);
      w.allreduce = std::max(w.allreduce, x.allreduce);
    }
    const double exposed = std::max(0.0, w.backward_ddp - w.backward);
    const double overlap = std::clamp(1.0 - exposed / w.allreduce, 0.0, 1.0);
    // The scaling model takes the overlap of several buckets per step: galore-60m's 118 MB of
    // gradients make 5 buckets of 25 MiB, as this model's 4.5 MB make 5 of 1 MiB.
    if (bucket_mb == 1.0) measured_overlap = overlap;
    const int64_t bytes = w.stats.bytes;
    configs.push_back(
        OrderedJson{{"bucket_mb", bucket_mb},
                    {"buckets", w.stats.buckets},
                    {"bucket_bytes", w.stats.bucket_bytes},
                    {"allreduce_bytes_per_step", bytes},
                    {"ring_bytes_per_rank", 2.0 * (kWorld - 1) / kWorld * static_cast<double>(bytes)},
                    {"backward_s", w.backward},
                    {"backward_with_reducer_s", w.backward_ddp},
                    {"allreduce_alone_s", w.allreduce},
                    {"exposed_communication_s", exposed},
                    {"overlap", overlap}});
    std::printf(
        "bucket %4.0f MiB: %lld buckets, %.2f MB all-reduced/step; backward %.2f ms, with reducer %.2f ms, "
        "all-reduce alone %.2f ms: exposed %.2f ms, overlap %.2f\n",
        bucket_mb, static_cast<long long>(w.stats.buckets), bytes / 1e6, 1e3 * w.backward,
        1e3 * w.backward_ddp, 1e3 * w.allreduce, 1e3 * exposed, overlap);
  }

  // Per-rank training-state bytes, replicated and under ZeRO-1: 2 steps of the trainer on each
  // rank (train::TrainResult::memory, counted after the first update).
  OrderedJson memory = OrderedJson::array();
  {
    at::Tensor tokens = at::randint(probe.config().vocab_size, {20000}, at::TensorOptions().dtype(at::kLong));
    const lowrank::train::TokenStream stream = lowrank::train::TokenStream::from_tensor(tokens);
    for (const char* optimizer : {"adamw", "galore"})
      for (const int zero : {0, 1}) {
        lowrank::train::TrainerConfig c;
        c.steps = 2;
        c.batch_size = 2 * batch;
        c.seq_len = seq;
        c.warmup_steps = 1;
        c.optimizer = optimizer;
        if (std::string(optimizer) == "galore") c.optimizer_options = {{"rank", 32}, {"update_gap", 200}};
        std::vector<OrderedJson> per_rank(kWorld);
        const int port = lowrank::free_loopback_port();
        char dir_template[] = "/tmp/bench-dist-XXXXXX";
        const std::string dir = ::mkdtemp(dir_template);
        std::vector<std::thread> threads;
        for (int r = 0; r < kWorld; ++r)
          threads.emplace_back([&, r] {
            const auto group = lowrank::dist::Group::join(lowrank::dist::World::loopback(r, kWorld, port),
                                                          std::chrono::seconds(60));
            lowrank::nn::Model model = preset_model("tiny", 1);
            lowrank::train::DataParallel parallel;
            parallel.group = group.get();
            parallel.zero = zero;
            per_rank[r] = lowrank::train::train(model, stream, c, dir, false, &parallel).memory;
          });
        for (auto& th : threads) th.join();
        std::filesystem::remove_all(dir);
        memory.push_back(OrderedJson{{"optimizer", optimizer}, {"zero", zero}, {"per_rank", per_rank}});
        std::printf("%s, ZeRO-%d: optimizer states per rank %.2f / %.2f MB, projectors %.3f / %.3f MB\n",
                    optimizer, zero, per_rank[0]["optimizer_states"].get<int64_t>() / 1e6,
                    per_rank[1]["optimizer_states"].get<int64_t>() / 1e6,
                    per_rank[0]["projectors"].get<int64_t>() / 1e6,
                    per_rank[1]["projectors"].get<int64_t>() / 1e6);
      }
  }

  // The scaling model at GaLore's LLaMA-60M shape.
  const int64_t psi60 = parameter_count(preset_model("galore-60m", 1));
  const double nvlink = 450e9, ethernet = 1.25e9;  // nominal bytes/s: H100 NVLink (per direction), 10 GbE
  OrderedJson scaling = OrderedJson::array();
  for (const int n : {2, 4, 8, 16, 64}) {
    const double ring = 2.0 * (n - 1) / n * 4.0 * static_cast<double>(psi60);
    scaling.push_back(OrderedJson{{"ranks", n},
                                  {"ring_bytes_per_rank", ring},
                                  {"allreduce_s_nvlink", ring / nvlink},
                                  {"allreduce_s_10gbe", ring / ethernet},
                                  {"exposed_s_nvlink", ring / nvlink * (1 - measured_overlap)},
                                  {"exposed_s_10gbe", ring / ethernet * (1 - measured_overlap)}});
  }
  const OrderedJson result{
      {"world_size", kWorld},
      {"threads_per_rank", 1},
      {"model",
       OrderedJson{{"preset", "tiny"}, {"parameters", psi}, {"batch_per_rank", batch}, {"seq_len", seq}}},
      {"weight_broadcast_bytes", 4 * psi},
      {"configs", configs},
      // ZeRO-1 broadcasts every tensor from its owner after each step: 4Ψ more per step.
      {"zero1_broadcast_bytes_per_step", 4 * psi},
      {"memory", memory},
      {"scaling_model",
       OrderedJson{{"preset", "galore-60m"},
                   {"parameters", psi60},
                   {"bandwidth_bytes_per_s", OrderedJson{{"nvlink", nvlink}, {"10gbe", ethernet}}},
                   {"overlap_used", measured_overlap},
                   {"rows", scaling}}}};
  lowrank::write_file_atomic(out, result.dump(2) + "\n");
  std::printf("galore-60m: %lld parameters, ring all-reduce %.1f MB per rank at N = 2; written %s\n",
              static_cast<long long>(psi60), 2.0 * 0.5 * 4.0 * psi60 / 1e6, out.c_str());
  return 0;
}
