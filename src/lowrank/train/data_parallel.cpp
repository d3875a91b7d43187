// Data-parallel checks of the training loop; see data_parallel.h.
#include "lowrank/train/data_parallel.h"

#include <map>

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/sha256.h"
#include "lowrank/optim/low_rank_adam.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/trainer.h"
#include "lowrank/version.h"

namespace lowrank::train {

Fingerprint run_fingerprint(const TrainerConfig& config, const TrainTarget& target, const TokenStream& data) {
  Fingerprint f;
  f.emplace_back("lowrank version", LOWRANK_VERSION);
  f.emplace_back("trainer config", config.to_json().dump());
  std::string tensors;
  for (const auto& [name, t] : target.params)
    tensors += lowrank::str(name, " ", t.sizes(), " ", c10::toString(t.scalar_type()), "\n");
  f.emplace_back("trained tensors", data::tasks::sha256_hex(std::string_view(tensors)) +
                                        str(" (", target.params.size(), " tensors)"));
  data::tasks::Sha256 tokens;
  const int64_t slices = 64, length = std::min<int64_t>(1024, data.size);
  for (int64_t i = 0; i < slices && data.size > 0; ++i) {
    const int64_t begin = (data.size - length) * i / slices;
    const at::Tensor t = data.slice(begin, length).to(at::kLong).contiguous();
    tokens.update(std::span(reinterpret_cast<const std::byte*>(t.data_ptr<int64_t>()),
                            static_cast<size_t>(t.numel()) * sizeof(int64_t)));
  }
  f.emplace_back("training tokens", str(data.size, " tokens, sha256 of samples ", tokens.hex_digest()));
  return f;
}

void check_same_run(dist::Group& group, const Fingerprint& fields) {
  Json mine = Json::array();
  for (const auto& [k, v] : fields) mine.push_back(Json::array({k, v}));
  const std::vector<std::string> all = group.all_gather_text("fingerprint", mine.dump());
  std::vector<Json> parsed;
  for (const std::string& text : all) parsed.push_back(Json::parse(text));
  const size_t n = fields.size();
  for (size_t i = 0; i < n; ++i) {
    std::map<std::string, std::vector<int>> holders;  // value -> ranks
    for (size_t r = 0; r < parsed.size(); ++r) {
      const Json& p = parsed[r];
      const std::string value =
          i < p.size() && p[i][0] == fields[i].first ? p[i][1].get<std::string>() : std::string("(missing)");
      holders[value].push_back(static_cast<int>(r));
    }
    if (holders.size() == 1) continue;
    std::string sides;
    for (const auto& [value, ranks] : holders) {
      std::string rank_list;
      for (int r : ranks) rank_list += (rank_list.empty() ? "" : ",") + std::to_string(r);
      sides += str("\n  rank", ranks.size() > 1 ? "s " : " ", rank_list, ": ",
                   value.size() > 400 ? value.substr(0, 400) + "..." : value);
    }
    throw InvalidArgument(
        str("the ranks disagree on the run before step 1: ", fields[i].first, " differs", sides));
  }
  for (size_t r = 0; r < parsed.size(); ++r)
    LR_CHECK(parsed[r].size() == n, InvalidArgument, "the ranks disagree on the run before step 1: rank ", r,
             " compares ", parsed[r].size(), " fields, this rank ", n);
}

void check_same_projectors(dist::Group& group, const optim::Optimizer& optimizer, int64_t step) {
  const auto* low_rank = dynamic_cast<const optim::LowRankAdam*>(&optimizer);
  if (low_rank == nullptr) return;
  data::tasks::Sha256 hash;
  for (const auto& [name, p] : low_rank->params()) {
    hash.update(std::string_view(name));
    hash.update(std::string_view(low_rank->is_active(name) ? "+" : "-"));
    if (const optim::Projector* projector = low_rank->projector(name))
      for (const auto& [key, t] : projector->state_tensors()) {
        const at::Tensor c = t.detach().to(at::kCPU).contiguous();
        hash.update(std::string_view(key));
        hash.update(std::span(reinterpret_cast<const std::byte*>(c.data_ptr()), c.nbytes()));
      }
  }
  const std::vector<std::string> all = group.all_gather_text(str("projectors/", step), hash.hex_digest());
  std::string differ;
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  LR_CHECK(differ.empty(), InvalidArgument, "after the projector refresh of step ", step, " rank(s) ", differ,
           " hold other projectors than rank 0 (an SVD on other hardware can flip signs); the replicas would "
           "drift apart: run with --zero 1, where only the owning rank computes a projector");
}

DataParallel make_data_parallel(dist::Group* group, int64_t bucket_bytes, int zero, Fingerprint fingerprint) {
  DataParallel parallel;
  if (!group) return parallel;
  parallel.group = group;
  parallel.reducer.bucket_bytes = bucket_bytes;
  parallel.zero = zero;
  parallel.fingerprint = std::move(fingerprint);
  return parallel;
}

bool resume_after_restart(const dist::Group* group, const std::filesystem::path& run_dir, bool resume) {
  if (resume || !group || group->world().restart_count == 0) return resume;
  return latest_checkpoint(run_dir).has_value();
}

void check_data_parallel_config(const TrainerConfig& config, int world_size, int zero) {
  LR_CHECK(zero == 0 || zero == 1, InvalidArgument, "--zero ", zero,
           ": only stages 0 (replicated) and 1 exist");
  LR_CHECK(zero == 0 || config.parameterization.empty(), InvalidArgument, "--zero 1 with --parameterization ",
           config.parameterization,
           ": a parameterisation's hooks reset optimizer state that ZeRO-1 keeps only on the owning rank; "
           "train it replicated (--zero 0)");
  if (world_size <= 1) return;
  LR_CHECK(config.batch_size % world_size == 0, InvalidArgument, "the global batch of ", config.batch_size,
           " windows does not split over ", world_size,
           " ranks (--batch-size must be a multiple of the world size)");
  LR_CHECK(
      !config.per_layer_updates, InvalidArgument,
      "per-layer updates step each parameter during backward, before its gradient is all-reduced; they are "
      "refused with ",
      world_size, " ranks (as HF transformers and LlamaFactory refuse layer-wise GaLore under DDP)");
}

}  // namespace lowrank::train
