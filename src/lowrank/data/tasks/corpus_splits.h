// The Debian corpora of data/corpus.h divided by document into train / val / test for the byte
// tasks (byte-text, byte-retrieval), so that no document lends bytes to two splits.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/tasks/registry.h"
#include "lowrank/data/tasks/task_format.h"

namespace lowrank::data::tasks {

struct CorpusSplits {
  std::string name;
  // The documents of each split (train, val, test), in a seeded random order.
  std::array<std::vector<std::string>, 3> documents;
  int64_t documents_read = 0;
  std::string sha256;  // of the corpus's documents as read, each followed by a NUL byte
};

// Reads a named corpus or a path (read_corpus), shuffles its documents with (seed, stream) and
// gives the first 80% (at least one) to train, the next 10% (at least one) to val, the rest (at
// least one) to test. Throws InvalidArgument naming the corpus when it has fewer than 3 documents.
CorpusSplits read_corpus_splits(const std::string& name, uint64_t seed, uint64_t stream);

// task.json's record of the corpora read: name, documents, SHA-256.
OrderedJson corpus_sources(const std::vector<CorpusSplits>& corpora);

// Every corpus of `names` read and split for a task of `seed` (corpus c from stream c).
std::vector<CorpusSplits> read_corpora(const std::vector<std::string>& names, uint64_t seed);

// The header of a byte-level classification task (byte-text, byte-retrieval): 256 byte tokens
// stored as uint8, one class per example out of `classes`, the task's resolved `parameters` and
// `layout`, and the corpora it drew from as its sources.
TaskHeader byte_task_header(const TaskRequest& request, std::string generator, const OrderedJson& parameters,
                            std::vector<std::string> classes, OrderedJson layout,
                            const std::vector<CorpusSplits>& corpora);

}  // namespace lowrank::data::tasks
