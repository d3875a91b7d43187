// Reading and writing compressed model directories (compress/format.h).
#include "lowrank/compress/format.h"

#include <map>
#include <memory>
#include <vector>

#include "lowrank/compress/matryoshka_kv.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/ops/group_quant.h"

namespace lowrank::compress {

namespace fs = std::filesystem;

namespace {

constexpr int kFormatVersion = 1;

int64_t required_int(const Json& d, const char* key, const std::string& slot) {
  LR_CHECK(d.contains(key) && d[key].is_number_integer(), Corruption, kCompressedConfigFile, ": slot ", slot,
           " lacks the integer field \"", key, "\"");
  return d[key].get<int64_t>();
}

}  // namespace

bool is_compressed_model(const fs::path& dir) {
  return fs::is_regular_file(dir / kCompressedConfigFile);
}

std::shared_ptr<StoredOperator> load_operator(const Json& d, const std::string& slot, bool has_bias,
                                              const std::function<at::Tensor(const std::string&)>& read,
                                              at::ScalarType dtype, at::Device device) {
  LR_CHECK(d.is_object() && d.contains("kind") && d["kind"].is_string(), Corruption, kCompressedConfigFile,
           ": slot ", slot, " has no \"kind\"");
  const std::string kind = d["kind"].get<std::string>();
  auto real = [&](const std::string& name) { return read(name).to(device, dtype).contiguous(); };
  // Read only by the kinds that own it: a compensated slot's bias belongs to its inner base.
  // A bias the architecture's slot lacks is one compression added (AFM's b₂): describe() says so.
  const bool stored_bias =
      has_bias || (d.contains("bias") && d["bias"].is_boolean() && d["bias"].get<bool>());
  auto bias = [&] { return stored_bias ? real("bias") : at::Tensor(); };
  auto quantized = [&](int64_t out, int64_t in) {
    const int bits = static_cast<int>(required_int(d, "bits", slot));
    const int64_t group = required_int(d, "group_size", slot);
    return ops::group_quantized_from_tensors(read("qweight"), read("scales"), bits, group, out, in)
        .to(device);
  };
  // Activation bits of the quantised kinds: absent (directories written before W4A4) means 16.
  auto act_bits = [&] {
    const int64_t b = d.contains("act_bits") ? required_int(d, "act_bits", slot) : 16;
    LR_CHECK(b == 4 || b == 16, Corruption, "act_bits ", b, " is not 4 or 16");
    return static_cast<int>(b);
  };
  try {
    if (kind == "lowrank")
      return std::make_shared<LowRankOperator>(real("lowrank_u"), real("lowrank_v"), bias());
    if (kind == "quantized") {
      const at::Tensor packed = read("qweight");
      LR_CHECK(packed.dim() == 2, Corruption, "qweight must be 2-D");
      const int bits = static_cast<int>(required_int(d, "bits", slot));
      const int64_t in = bits == 4 ? 2 * packed.size(1) : packed.size(1);
      return std::make_shared<QuantizedOperator>(quantized(packed.size(0), in), bias(), act_bits());
    }
    if (kind == "lowrank_quantized") {
      const int bits = static_cast<int>(required_int(d, "bits", slot));
      const int64_t group = required_int(d, "group_size", slot), rank = required_int(d, "rank", slot);
      auto factor = [&](const std::string& name, int64_t features) {
        return ops::group_quantized_from_tensors(read(name + "_qweight"), read(name + "_scales"), bits, group,
                                                 rank, features)
            .to(device);
      };
      const at::Tensor packed_v = read("lowrank_v_qweight");
      LR_CHECK(packed_v.dim() == 2, Corruption, "lowrank_v_qweight must be 2-D");
      const at::Tensor packed_ut = read("lowrank_ut_qweight");
      LR_CHECK(packed_ut.dim() == 2, Corruption, "lowrank_ut_qweight must be 2-D");
      const int64_t per_byte = bits == 4 ? 2 : 1;
      return std::make_shared<QuantizedLowRankOperator>(factor("lowrank_ut", per_byte * packed_ut.size(1)),
                                                        factor("lowrank_v", per_byte * packed_v.size(1)),
                                                        bias());
    }
    if (kind == "svdquant") {
      const at::Tensor up = real("lora_up"), down = real("lora_down");
      LR_CHECK(up.dim() == 2 && down.dim() == 2, Corruption, "lora_up and lora_down must be 2-D");
      return std::make_shared<SvdQuantOperator>(real("smooth"), up, down, quantized(up.size(0), down.size(1)),
                                                bias(), act_bits());
    }
    if (kind == "sparse24")
      return std::make_shared<Sparse24Operator>(real("sparse24_values"), read("sparse24_indices"), bias());
    if (kind == "sparse_lowrank") {
      if (d.value("sparse_format", std::string("coo")) == "csr")
        return std::make_shared<SparseLowRankOperator>(real("lowrank_u"), real("lowrank_v"),
                                                       read("sparse_row_offsets"), read("sparse_col_indices"),
                                                       real("sparse_values"), bias());
      // Directories written before CSR: flat int64 indices into [out, in].
      const at::Tensor u = real("lowrank_u"), v = real("lowrank_v"), flat = read("sparse_indices");
      LR_CHECK(u.dim() == 2 && v.dim() == 2 && flat.dim() == 1 && flat.scalar_type() == at::kLong, Corruption,
               "sparse_indices must be 1-D int64 beside 2-D factors");
      at::Tensor sparse = at::zeros({u.size(0) * v.size(1)}, u.options());
      LR_CHECK(flat.numel() == 0 ||
                   (flat.min().item<int64_t>() >= 0 && flat.max().item<int64_t>() < sparse.numel()),
               Corruption, "a sparse index lies outside the weight");
      sparse.index_put_({flat.to(device)}, real("sparse_values"));
      return SparseLowRankOperator::from_dense_sparse(u, v, sparse.reshape({u.size(0), v.size(1)}), bias());
    }
    if (kind == "compensated") {
      LR_CHECK(d.contains("base"), Corruption, "a compensated slot needs its \"base\"");
      auto inner = load_operator(d["base"], slot, has_bias, read, dtype, device);
      const std::string method = d.value("method", std::string("eora"));
      return std::make_shared<CompensatedOperator>(std::move(inner), real("compensation_a"),
                                                   real("compensation_b"), method);
    }
  } catch (const Corruption& e) {
    throw Corruption(str(kCompressedConfigFile, ": slot ", slot, " (", kind, "): ", e.what()));
  } catch (const InvalidArgument& e) {
    throw Corruption(str(kCompressedConfigFile, ": slot ", slot, " (", kind, "): ", e.what()));
  }
  throw Corruption(str(
      kCompressedConfigFile, ": slot ", slot, " has the unknown operator kind \"", kind,
      "\" (known: lowrank, quantized, lowrank_quantized, svdquant, sparse24, sparse_lowrank, compensated)"));
}

nn::Model load_model(const fs::path& dir, const nn::LoadOptions& options) {
  if (!is_compressed_model(dir)) return nn::Model::load(dir, options);
  const fs::path config_path = dir / kCompressedConfigFile;
  const Json config = read_json_file(config_path);
  LR_CHECK(config.value("format", std::string()) == "lowrank.compressed", Corruption, config_path.string(),
           ": \"format\" must be \"lowrank.compressed\"");
  LR_CHECK(config.value("version", 0) == kFormatVersion, Unsupported, config_path.string(), ": version ",
           config.value("version", 0), " is not supported (this build reads version ", kFormatVersion, ")");
  LR_CHECK(config.contains("slots") && config["slots"].is_object(), Corruption, config_path.string(),
           ": \"slots\" must be an object");
  auto slots = std::make_shared<std::map<std::string, Json>>();
  for (const auto& [name, d] : config["slots"].items()) (*slots)[name] = d;

  nn::LoadOptions o = options;
  auto seen = std::make_shared<std::size_t>(0);
  // The last SVDQuant operators read: a shared branch (q, k, v; gate, up, loaded one after the
  // other) stores λ and L2 once per slot, and sharing them again lets forward compute x̂ L2ᵀ once.
  auto recent = std::make_shared<std::vector<std::shared_ptr<SvdQuantOperator>>>();
  o.operator_loader = [slots, seen, recent, dtype = options.dtype, device = options.device](
                          const std::string& slot, int64_t, int64_t, bool bias,
                          const nn::StoredTensorReader& read) -> std::shared_ptr<nn::BaseOperator> {
    auto it = slots->find(slot);
    if (it == slots->end()) return nullptr;
    ++*seen;
    auto relative = [&](const std::string& name) { return read(slot + "." + name); };
    std::shared_ptr<StoredOperator> op = load_operator(it->second, slot, bias, relative, dtype, device);
    if (auto svdquant = std::dynamic_pointer_cast<SvdQuantOperator>(op)) {
      for (const auto& earlier : *recent)
        if (auto shared = svdquant->sharing_branch_input(*earlier)) {
          svdquant = std::move(shared);
          break;
        }
      recent->insert(recent->begin(), svdquant);
      if (recent->size() > 2) recent->pop_back();
      return svdquant;
    }
    return op;
  };
  nn::Model model = nn::Model::load(dir, o);
  LR_CHECK(*seen == slots->size(), Corruption, config_path.string(), ": ", slots->size() - *seen,
           " slot(s) listed there are not slots of this model (", slots->begin()->first, ", ...)");
  if (config.contains("matryoshka_kv")) load_kv_compression(model, dir, config["matryoshka_kv"]);
  return model;
}

void save_compressed_model(const nn::Model& model, const fs::path& dir, const fs::path& source_dir,
                           at::ScalarType dtype, const OrderedJson& extra) {
  model.save(dir, dtype);
  OrderedJson slots = OrderedJson::object();
  for (const nn::LinearSlot* s : model.slots())
    if (const auto* op = dynamic_cast<const StoredOperator*>(&s->base())) slots[s->name()] = op->describe();
  OrderedJson config{{"format", "lowrank.compressed"}, {"version", kFormatVersion}};
  for (const auto& [k, v] : extra.items()) config[k] = v;
  config["slots"] = std::move(slots);
  write_json_file(dir / kCompressedConfigFile, config);
  nn::copy_model_side_files(source_dir, dir);
}

}  // namespace lowrank::compress
