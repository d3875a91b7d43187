// byte-retrieval: are two byte windows from the same document? The shape of LRA Retrieval (Tay et
// al., 2021, arXiv:2011.04006, §3.3: two byte-level documents encoded separately, a binary
// label), built from the project's Debian corpora (data/corpus.h) since LRA's ACL Anthology
// Network data needs a download.
//
// Each corpus's documents are divided 80/10/10 into train / val / test (corpus_splits.h); only
// documents of at least 2 * window bytes take part. An example draws a corpus uniformly, then a
// document d of it uniformly and a label y ~ U{0, 1}. y = 1: two windows of d that do not overlap
// (a ~ U{0, ..., |d| - 2w}, b ~ U{a + w, ..., |d| - w}, their order then swapped with probability
// 1/2). y = 0: one window of d and one of another document e != d of the same corpus and split,
// each at a uniform offset (d's first or second with probability 1/2). Negatives come from the
// same corpus so that the corpus's style gives nothing away. Tokens: the two windows back to back
// (uint8, vocabulary 256, 2 * window bytes; task.json's layout names the segments).
#pragma once

#include "lowrank/data/tasks/registry.h"

namespace lowrank::data::tasks {

TaskDefinition byte_retrieval_task();

}  // namespace lowrank::data::tasks
