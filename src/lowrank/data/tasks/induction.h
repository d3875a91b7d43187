// Induction heads — Olsson et al., 2022; the synthetic task of H3 (Fu et al., 2023, "Hungry
// Hungry Hippos", arXiv:2212.14052, §3.1) that the Mamba paper (Gu & Dao, 2023,
// arXiv:2312.00752, §4.1.2) trains at vocabulary 16, length 256. Generated as the H3/Hyena
// authors' code does: HazyResearch/safari, src/dataloaders/synthetics.py (generate_induction_head
// with induction_len = 1, num_triggers = 1; the vocabulary of ICLDataModule).
//
// Vocabulary of V tokens: V - 2 ordinary tokens (ids 0..V-3), the trigger "=>" (V - 2) and the
// unused no-op "." (V - 1), as the code's vocabulary holds both specials. Per example: L ordinary
// tokens drawn uniformly, then "=>"; a position p ~ U{0, ..., L - 3}; token p becomes "=>". The
// target is the token that follows the first "=>" (position p + 1): the model sees
// "... => b ... =>" and must answer b. The label is a class id equal to b's token id (classes are
// the ordinary tokens). The input is the code's example without its last token (the answer),
// exactly what its language-model shift feeds the model.
// Defaults: the Mamba paper's training setting (V = 16, L = 256); split sizes 5,000 / 500 / 500
// (the code's icl_synthetics defaults: 5,000 training, 500 test examples).
// Deviations: the random stream is TaskRng, and the code's re-draw of duplicate examples is
// omitted (at these sizes a duplicate has probability below 1e-200). Token ids are by number; the
// code sorts its vocabulary as strings, a relabeling that changes nothing.
#pragma once

#include "lowrank/data/tasks/registry.h"

namespace lowrank::data::tasks {

TaskDefinition induction_task();

}  // namespace lowrank::data::tasks
