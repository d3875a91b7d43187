#include "lowrank/catalog.h"

#include "lowrank/adapt/adapter.h"
#include "lowrank/compress/methods.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/mix/registry.h"
#include "lowrank/optim/methods.h"
#include "lowrank/train/parameterization.h"

namespace lowrank {

std::vector<MethodFamily> method_families() {
  // Families whose registries are not built yet are listed empty, so the layout of
  // `lowrank methods --json` is stable as methods arrive.
  return {
      {"adapt", "adapters attached to linear slots (LoRA family, PEFT-compatible)", adapt::registry().list()},
      {"optim", "low-rank gradient optimizers (GaLore family): pretrain --optimizer NAME",
       optim::registry().list()},
      {"parameterization",
       "low-rank weight parameterisations for training: pretrain --parameterization NAME (lowrank is the "
       "trained-by-design half of Greenformers' low-rank transformation, docs/methods/greenformers.md)",
       train::parameterization_registry().list()},
      {"compress",
       "post-training compression (truncated/whitened SVD, low-rank + 4-bit, EoRA via --compensate): "
       "compress --method NAME (svd is the post-training half of Greenformers' low-rank transformation)",
       compress::registry().list()},
      {"mix",
       "token mixers chosen per layer of a lowrank_mixer model: config.json \"layer_mixers\" and "
       "\"mixer_config\" (docs/mixers.md)",
       mix::registry().list()},
      {"kernel",
       "kernel methods and learning-theory estimators: lowrank kernel fit --method NAME "
       "(docs/kernel_methods.md)",
       kernel_methods::registry().list()},
  };
}

}  // namespace lowrank
