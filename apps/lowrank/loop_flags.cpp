// The training-loop flags shared by the small-model verbs; see loop_flags.h.
#include "apps/lowrank/loop_flags.h"

#include <algorithm>

namespace lowrank::cli {

void LoopFlags::add_to(CLI::App& cmd, const std::string& unit, const std::string& seeded, bool clip) {
  cmd.add_option("--steps", steps, "Optimizer steps (0: --epochs passes)")->capture_default_str();
  cmd.add_option("--epochs", epochs, "Passes over the training " + unit + " when --steps is 0")
      ->capture_default_str();
  cmd.add_option("--batch-size", batch_size, "Training " + unit + " per step")->capture_default_str();
  cmd.add_option("--lr", lr, "Peak learning rate")->capture_default_str();
  cmd.add_option("--min-lr", min_lr, "Cosine floor (at most --lr)")->capture_default_str();
  cmd.add_option("--warmup", warmup, "Warmup steps")->capture_default_str();
  cmd.add_option("--weight-decay", weight_decay, "Decoupled (AdamW) weight decay")->capture_default_str();
  if (clip) cmd.add_option("--clip", this->clip, "Global gradient-norm clip (0: off)")->capture_default_str();
  cmd.add_option("--checkpoint-every", checkpoint_every, "Checkpoint every N steps (0: at the end)")
      ->capture_default_str();
  cmd.add_option("--stop-after", stop_after, "Stop after this step without a checkpoint (testing)");
  cmd.add_option("--seed", seed, "Seed of " + seeded)->capture_default_str();
  cmd.add_flag("--resume", resume, "Continue from the run's last checkpoint");
}

train::TrainerConfig LoopFlags::trainer_config() const {
  train::TrainerConfig tc;
  tc.steps = steps;
  tc.batch_size = batch_size;
  tc.lr = lr;
  tc.min_lr = std::min(min_lr, lr);
  tc.warmup_steps = warmup;
  tc.clip_norm = clip;
  tc.adam.weight_decay = weight_decay;
  tc.seed = seed;
  tc.checkpoint_every = checkpoint_every;
  tc.stop_after = stop_after;
  return tc;
}

}  // namespace lowrank::cli
