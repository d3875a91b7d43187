// The token mixer: the half of a decoder layer that lets positions exchange information
//   h' = h + Mixer(RMSNorm(h))        (model.h; the MLP half follows unchanged)
// Softmax attention (attention.h) is the first implementation; the approximations and the
// recurrent or convolutional mixers of mix/ are others. A layer's mixer is picked by name from
// config.json (config.h: `layer_mixers`, `mixer_config`) and built by the factory registered under
// that name (mixer_registry() below).
//
// The contract a mixer keeps, so that every method above nn/ sees it as it sees attention:
// - every projection is a LinearSlot named `<prefix>.<projection>` (slots()), so adapters,
//   compression, the low-rank optimizers and the serving router find and decorate it by name;
// - every other parameter is a tensor under its file name (tensors()): saved, loaded and trained
//   like the norms;
// - forward is const and thread-safe, differentiable in x and in every tensor of the mixer.
//
// Layering: nn/ owns this interface and the registry; mix/ implements mixers and fills the
// registry (mix::register_builtin), so nn/ never includes mix/. "attention" is nn's own and is
// always registered, so a Llama-family model never depends on mix/.
//
// Decoding (generate): Model::new_cache gives every layer what it needs to continue a sequence
// token by token: attention layers (uses_kv_store) their keys and values in the KV store, every
// other layer its MixerState (new_state). Prefill runs the prompt through prefill(), which leaves
// the state as if step() had been called position by position; each later token runs step(). A
// causal mixer with neither a KV store nor a decode state cannot decode: Model::new_cache refuses it
// (Unsupported, naming the layer and the mixer) rather than re-running forward over the whole
// prefix at every token, which would hide a cost quadratic in the length behind a working call.
// The paged serving engine (serve/paged_kv.h) keeps keys and values only and refuses a model with
// any other layer at construction.
//
// param_groups() reaches the optimizers through the trainers (train/trainer.h's param_overrides,
// optim::ParamOverride).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/core/registry.h"
#include "lowrank/nn/kv_cache.h"
#include "lowrank/nn/linear_slot.h"

namespace lowrank::nn {

struct ModelConfig;

// Which keys each query may attend to in one forward step (make_attention_mask, attention.h).
struct AttentionMask {
  at::Tensor allowed;      // bool [B or 1, 1, T, S], true = attend; undefined: no mask needed
  bool is_causal = false;  // T == S, no padding, no window in effect: the plain causal mask
};

// The 2-D layout of the T positions of an image mixer: T = height · width, row-major.
struct Grid2d {
  int64_t height = 0;
  int64_t width = 0;
};

// What a mixer may need beyond its input, for the T new positions of one forward step. A mixer
// reads what it needs and ignores the rest.
struct MixerContext {
  // Attention's mask for this layer (its sliding window applied); null when the caller has none.
  const AttentionMask* mask = nullptr;
  // [B, T] bool: true = a real token, false = padding (left padding). Undefined: all real.
  at::Tensor valid;
  // [B, T] int64 positions, and RoPE's cos/sin [B, T, head_dim] for them (rope.h).
  at::Tensor positions;
  at::Tensor cos, sin;
  // The positions' 2-D layout, for image mixers; absent for sequences.
  std::optional<Grid2d> grid;
  // The key/value store of attention-like mixers (between KVStore::begin and commit), and the
  // number of positions it already holds; null for a plain forward.
  KVStore* cache = nullptr;
  int64_t past = 0;
  // Per-row adapters for every slot of the mixer (linear_slot.h); null: all attached adapters.
  const AdapterRouting* routing = nullptr;
};

// The constant-size state of a mixer that decodes one position at a time (a recurrence, running
// feature-map sums, a window of recent keys): what new_state() returns and step() advances. Each
// mixer derives its own. It holds B rows that advance independently: under left padding, rows
// start at different columns, so anything per row (a count of positions, a ring buffer's head)
// is a per-row tensor, never one number for the batch. Its size must not grow with the number of
// positions seen (that is what a KV store is for).
struct MixerState {
  virtual ~MixerState() = default;
};

// A per-tensor override of the optimizer's settings (S4's convention: its A and Δt train with
// their own learning rate and no weight decay). Absent fields keep the run's setting; `lr` is the
// peak learning rate, scheduled like every other.
struct ParamGroup {
  std::string tensor;  // full file name, as tensors() lists it
  std::optional<double> lr;
  std::optional<double> weight_decay;
};

class TokenMixer {
 public:
  virtual ~TokenMixer() = default;

  // The registry name ("attention", "scatterbrain", ...).
  virtual std::string name() const = 0;

  // x [B, T, hidden] -> [B, T, hidden].
  virtual at::Tensor forward(const at::Tensor& x, const MixerContext& context) const = 0;

  // Causal: output i depends on inputs j <= i only (a language model needs this); bidirectional:
  // every output may see every input (classification, images).
  virtual bool causal() const = 0;
  bool bidirectional() const { return !causal(); }
  // Whether forward keeps the past in context.cache (attention) and so can decode through a KV
  // store; a mixer that does not ignores the cache.
  virtual bool uses_kv_store() const { return false; }

  // The optional constant-size decode path: new_state(B) starts B empty sequences, and
  // step(x [B, 1, hidden], state, context) returns the next position's output [B, 1, hidden]
  // (equal to forward's row at that position) and advances the state. Default: Unsupported.
  // step's context describes the one new position: context.positions/cos/sin of each row, and
  // context.valid [B, 1] when some rows are padding (left padding of a batched prompt). A padding
  // row must leave its state exactly as it was; its output is ignored but must be finite (the
  // next layer's attention multiplies it by a zero weight, and 0 · NaN is NaN). context.cache is
  // null and context.mask absent.
  virtual bool has_decode_state() const { return false; }
  virtual std::unique_ptr<MixerState> new_state(int64_t batch) const;
  virtual at::Tensor step(const at::Tensor& x, MixerState& state, const MixerContext& context) const;
  // The prompt of a decode, x [B, T, hidden] for T positions after those `state` has seen: returns
  // forward's rows for them [B, T, hidden] and leaves `state` exactly as T calls of step() would,
  // padding rows (context.valid false) included: they must not enter the state. The default does
  // just that, calling step() once per position with the context narrowed to that column, so every
  // mixer with a step() is right without more code. A mixer whose forward computes the state on the
  // way (Performer's prefix sums end in Σφ(k)vᵀ and Σφ(k); a window's last w keys) may override it
  // to run in parallel, and must then honour context.valid itself.
  virtual at::Tensor prefill(const at::Tensor& x, MixerState& state, const MixerContext& context) const;

  // Every projection, in a fixed order (attention: q, k, v, o).
  virtual std::vector<LinearSlot*> slots() = 0;
  std::vector<const LinearSlot*> slots() const;
  // The parameters that are not slots, under their full file names; they share storage with the
  // mixer (the trainer updates them in place).
  virtual NamedTensors tensors() const { return {}; }
  // Per-tensor optimizer overrides (see ParamGroup); empty for most mixers.
  virtual std::vector<ParamGroup> param_groups() const { return {}; }
};

// How a fresh model initialises a mixer tensor (a loaded model reads it instead).
enum class ParamInit {
  kNormal,  // N(0, initializer_range), as the projections
  kZeros,
  kOnes,
  kValue,  // the given value (a mixer's own initialisation, e.g. S4D's A = -1/2 + iπn)
};

// A fresh tensor of `shape` as `init` asks, in `dtype` on the CPU: zeros, ones, a copy of `value`, or
// for kNormal whatever `normal(shape)` draws (each builder has its own stream and scale, or refuses
// random extras). What MixerSpec::tensor gives a model that is not loaded.
at::Tensor initial_tensor(ParamInit init, at::IntArrayRef shape, const at::Tensor& value,
                          at::ScalarType dtype,
                          const std::function<at::Tensor(at::IntArrayRef shape)>& normal);

// What a factory gets to build the mixer of one layer.
struct MixerSpec {
  const ModelConfig& config;
  int64_t layer = 0;
  // The module name of the mixer: "model.layers.3.self_attn" for attention,
  // "model.layers.3.mixer" for every other mixer.
  std::string prefix;
  // The mixer's options: config.json's mixer_config[<name>], or an empty object.
  Json options;
  // The base operator of projection `name` (full slot name) of shape [out, in]: a dense weight
  // (random or loaded), or what the model's operator loader builds (compressed checkpoints).
  std::function<std::shared_ptr<const BaseOperator>(const std::string& name, int64_t out, int64_t in,
                                                    bool bias)>
      projection;
  // The tensor `name` (full file name) of `shape`, in the model's dtype and device: loaded, or
  // initialised by `init` (with `value` for ParamInit::kValue, any dtype, of `shape`).
  std::function<at::Tensor(const std::string& name, std::vector<int64_t> shape, ParamInit init,
                           const at::Tensor& value)>
      tensor;
};

using MixerFactory = std::function<std::unique_ptr<TokenMixer>(const MixerSpec& spec)>;

// The mixers nn::Model can build, by name. Thread-safe; it starts with "attention" (nn's own), and
// mix::register_builtin (or a test) adds the rest, normally once at start-up.
class MixerRegistry {
 public:
  MixerRegistry();
  // Throws InvalidArgument for a bad or taken name (core/registry.h's rules).
  void add(MethodInfo info, MixerFactory factory);
  bool contains(const std::string& name) const;
  // Throws NotFound listing the known names.
  MixerFactory factory(const std::string& name) const;
  std::vector<MethodInfo> list() const;
  // The known names, comma-separated (for messages).
  std::string known() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The process's mixer registry, which nn::Model builds from.
MixerRegistry& mixer_registry();

// The module name of `mixer`'s block in layer `layer` (see MixerSpec::prefix).
std::string mixer_prefix(const std::string& mixer, int64_t layer);

}  // namespace lowrank::nn
