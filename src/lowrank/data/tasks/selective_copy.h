// Selective copying — Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with Selective State
// Spaces" (arXiv:2312.00752), §3.1 and Fig. 2: M data tokens at random positions among noise
// tokens, then M marker tokens; the model must output the data tokens in order. The Mamba
// authors did not release this generator (state-spaces/mamba issue #343 points to the S4
// repository's copying task); this follows that code with variable = True:
// state-spaces/s4, src/dataloaders/datasets/copying.py (torch_copying_data).
//
// Vocabulary of A tokens: 0 the noise token, 1..A-2 data tokens, A-1 the marker. Per example:
// data tokens t_1..t_M ~ U{1, ..., A-2}; M distinct positions drawn uniformly among the first
// L + M and sorted; input = the L + M positions (noise except t_i at the i-th position), then M
// markers; target = t_1..t_M (a row of M tokens in labels.bin).
// Settings: --lra gives the Mamba paper's (§E.1: sequence length 4096 = L + M, vocabulary 16
// including the noise and marker tokens, M = 16); the default is CPU-sized (L + M = 256), with
// the S4 repository's copying split sizes (10,000 training, 1,000 evaluation samples).
// Deviation: the random stream is TaskRng; positions are drawn by a partial Fisher-Yates shuffle
// (the code's torch.randperm(L + M)[:M] gives the same distribution).
#pragma once

#include "lowrank/data/tasks/registry.h"

namespace lowrank::data::tasks {

TaskDefinition selective_copy_task();

}  // namespace lowrank::data::tasks
