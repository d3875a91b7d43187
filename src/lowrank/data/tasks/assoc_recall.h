// Associative recall — Ba et al., 2016; the synthetic task of H3 (Fu et al., 2023, "Hungry
// Hungry Hippos", arXiv:2212.14052, §3.1, Table 1), used again by Hyena and the Mamba line.
// Generated as the authors' code does: HazyResearch/safari, src/dataloaders/synthetics.py
// (generate_assoc_recall with num_keys = 1, allow_dot = False, ICLDataModule's vocabulary) and
// configs/dataset/icl_synthetics.yaml (vocab_size 20, input_seq_len 40, 5,000 / 500 examples).
//
// Vocabulary of V tokens: V - 2 ordinary tokens (ids 0..V-3), "=>" (V - 2), "." (V - 1). The
// first (V - 2) / 2 ordinary tokens are keys, the rest values. Per example: a fresh map draws each
// key's value uniformly from the values (in key order); then L / 2 times a key k is drawn
// uniformly and "k map(k)" appended; then "=>" and a query key: drawn uniformly from all keys,
// and, if it did not occur, drawn again uniformly from the keys that occurred (in order of first
// occurrence). Label: map(query) as a class id equal to its token id (classes are the ordinary
// tokens). The input is the code's example without its last token (the answer).
// Deviations: the random stream is TaskRng, and the code's re-draw of duplicate examples is
// omitted. Token ids are by number; the code sorts its vocabulary as strings, so its keys are the
// first half in string order: a relabeling that changes nothing.
#pragma once

#include "lowrank/data/tasks/registry.h"

namespace lowrank::data::tasks {

TaskDefinition assoc_recall_task();

}  // namespace lowrank::data::tasks
