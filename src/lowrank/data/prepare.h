// `lowrank data prepare`: tokenizes a corpus (corpus.h) into a token dataset directory
// (token_dataset.h) with a deterministic train/validation split.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "lowrank/data/token_dataset.h"

namespace lowrank::data {

struct PrepareOptions {
  std::string corpus;                 // a named corpus (corpus_names()) or a file / directory
  std::filesystem::path tokenizer;    // tokenizer.json (or a directory holding one)
  std::filesystem::path out;          // the dataset directory to create; must not exist
  double validation_fraction = 0.05;  // in [0, 1): expected share of documents in validation
  uint64_t seed = 0;                  // seeds the split hash
  int64_t max_documents = -1;         // < 0: all documents of the corpus
};

struct PrepareSummary {
  TokenDatasetInfo info;
  std::string dtype;         // "uint16" or "uint32"
  std::string unit;          // the corpus's document unit
  int64_t corpus_bytes = 0;  // text bytes of the documents tokenized
  int64_t skipped_documents = 0;
};

// True when document `index` goes to the validation split: a seeded 64-bit hash of the index,
// mapped to [0, 1), is below `fraction`. Independent of the other documents, so validation is
// spread over the whole corpus and a prefix (--max-documents) keeps its documents' splits.
bool in_validation(int64_t index, uint64_t seed, double fraction);

// Reads the corpus, encodes each document (without special tokens) and writes the dataset
// directory: every document's tokens are followed by eos_id (when the tokenizer has one), the
// ids are stored as uint16 when vocab_size <= 65535, else uint32. The directory is built in a
// temporary sibling and renamed into place, so on any error nothing is left at `out`.
// Throws InvalidArgument (bad options, `out` exists, empty corpus or train split), the corpus
// reader's and tokenizer's errors, IoError when writing fails. Draws a progress bar.
PrepareSummary prepare_dataset(const PrepareOptions& options);

// The dataset stage of the training pipelines (`pretrain`, `finetune`): the token dataset at
// options.out, prepared first (prepare_dataset, logged as "<who>: tokenizing ...") unless a
// complete one is already there (its dataset.json), so that reruns and resumes reuse it. Throws as
// prepare_dataset and TokenDataset::open.
TokenDataset cached_dataset(const PrepareOptions& options, std::string_view who);

}  // namespace lowrank::data
