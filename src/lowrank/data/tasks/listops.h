// ListOps — Nangia & Bowman, 2018, "ListOps: A Diagnostic Dataset for Latent Tree Learning"
// (arXiv:1804.06028), in the long form of the Long Range Arena (Tay et al., 2021, "Long Range
// Arena: A Benchmark for Efficient Transformers", arXiv:2011.04006, §3.1), generated as the
// authors' code does: google-research/long-range-arena, lra_benchmarks/data/listops.py
// (generate_tree, to_value) and lra_benchmarks/listops/input_pipeline.py (the tokenizer rule).
//
// generate_tree(depth = 1): at depth < max_depth draw r ~ U[0, 1), else r = 1. If r > VALUE_P
// (0.25) the node is a digit drawn uniformly from 0..9; otherwise it is an operator node with
// n ~ U{2, ..., max_args} children, generated first (depth + 1), then its operator drawn
// uniformly from {MIN, MAX, MED, SM}. The length counts the tree's tokens: a digit 1, an operator
// node 2 (its operator and its "]") plus its children's. Trees with min_length < length <
// max_length (strict, as the code) are kept, duplicates dropped, until train + val + test
// distinct trees exist. Label: the tree's value, MED = int(np.median(args)) (the mean of the two
// middle values, truncated, for an even count), SM = sum(args) mod 10; 10 classes.
// Tokens: the LRA input pipeline deletes the parentheses of the serialised tree and renames "]"
// to "X"; its TokenTextEncoder splits "[MIN" to "MIN". Ids here: 0 <pad>, 1..10 the digits 0..9,
// 11 MIN, 12 MAX, 13 MED, 14 SM, 15 X (the LRA vocabulary, with fixed ids).
// Settings: --lra gives the paper's (max_depth 10, max_args 10, 500 < length < 2000,
// 96,000 / 2,000 / 2,000 examples); the default is CPU-sized (100 < length < 500,
// 10,000 / 1,000 / 1,000), with the same tree parameters.
// Deviations: the random stream is TaskRng, not Python's; the splits take the distinct trees in
// the order they were drawn (the code's Python set has no defined order), and the uniform choices
// are drawn with the same order of calls as the code.
#pragma once

#include <cstdint>
#include <vector>

#include "lowrank/data/tasks/registry.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

inline constexpr double kListOpsValueP = 0.25;
inline constexpr int32_t kListOpsDigit0 = 1;  // digit d is token d + 1
inline constexpr int32_t kListOpsMin = 11, kListOpsMax = 12, kListOpsMed = 13, kListOpsSumMod = 14,
                         kListOpsEnd = 15;

std::vector<std::string> listops_vocabulary();

struct ListOpsTree {
  std::vector<int32_t> tokens;  // prefix order: operator, arguments..., X
  int32_t value = 0;            // 0..9
};

// One tree of generate_tree(depth = 1, max_depth, max_args).
ListOpsTree generate_listops_tree(TaskRng& rng, int64_t max_depth, int64_t max_args);

TaskDefinition listops_task();

}  // namespace lowrank::data::tasks
