// byte-text: which Debian corpus did a byte window come from? A byte-level long-document
// classification task in the shape of LRA Text (Tay et al., 2021, arXiv:2011.04006, §3.2: bytes,
// 1K-4K long, a document-level label), built from the corpora the project already reads
// (data/corpus.h: bible, gcide, fortunes, cpp-headers) since LRA's IMDb needs a download.
//
// Each corpus's documents are divided 80/10/10 into train / val / test (corpus_splits.h) and each
// split's documents joined with "\n" into one text per corpus. An example draws its class c
// uniformly, a window length w ~ U{min_window, ..., max_window} and an offset uniformly among the
// positions where w bytes fit in split text of corpus c; the tokens are those bytes (uint8,
// vocabulary 256, rows of varying length, no padding token), the label c. A window may cross a
// document boundary inside one corpus; it never mixes corpora or splits.
#pragma once

#include "lowrank/data/tasks/registry.h"

namespace lowrank::data::tasks {

TaskDefinition byte_text_task();

}  // namespace lowrank::data::tasks
