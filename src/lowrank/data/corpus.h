// Text corpora: named corpora read from Debian packages, or plain-text files a user names, each
// read as a list of documents (the unit `lowrank data prepare` assigns to a split).
//
// Named corpora and their document unit:
//   bible        the King James Bible (apt: bible-kjv, bible-kjv-text), read through the `bible`
//                program of bible-kjv (the data file is in its own compressed format). One
//                document per chapter (1,189), one verse per line as "Ge1:1 In the beginning ...".
//   gcide        the GNU Collaborative International Dictionary of English (apt: dict-gcide),
//                /usr/share/dictd/gcide.{index,dict.dz}. One document per dictionary entry (the
//                index's headwords sharing one entry give one document; the 00-database-* entries
//                are left out), with the markup stripped (see clean_gcide_entry).
//   fortunes     the fortune cookie files (apt: fortunes-min, fortunes) under
//                /usr/share/games/fortunes, in strfile format. One document per fortune.
//   cpp-headers  C++ standard library headers (/usr/include/c++/<newest>/, recursive) and the
//                top-level C headers /usr/include/*.h (apt: libstdc++-12-dev, libc6-dev). One
//                document per file.
// Any other name is a path: a directory gives one document per regular text file under it
// (recursive, sorted by path; files holding a NUL byte are skipped as binary), a file gives one
// document per paragraph (text separated by blank lines).
//
// Documents that are not valid UTF-8 are skipped (and counted), as are empty ones.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowrank::data {

struct Document {
  std::string source;  // where it came from: "Ge1", "gcide:Abacus", a file path, "path#12"
  std::string text;
};

struct Corpus {
  std::string name;  // the named corpus, or the path as given
  std::string unit;  // the document unit: "chapter", "entry", "fortune", "file", "paragraph"
  std::vector<Document> documents;
  int64_t bytes = 0;    // total text bytes of the documents
  int64_t skipped = 0;  // documents left out: not UTF-8, binary, or empty
};

// The named corpora: bible, gcide, fortunes, cpp-headers.
std::vector<std::string> corpus_names();

// Reads the named corpus, or the file / directory at `name_or_path`; at most max_documents
// documents when max_documents >= 0 (the first ones, in corpus order). Throws InvalidArgument
// for a name that is neither known nor an existing path (listing the known names), NotFound when
// a named corpus's Debian package is not installed (naming the apt package), InvalidArgument
// for a corpus with no documents.
Corpus read_corpus(std::string_view name_or_path, int64_t max_documents = -1);

// Splits strfile-format text (fortunes) on lines holding only "%"; pieces are trimmed of
// surrounding blank lines, empty pieces dropped.
std::vector<std::string> split_fortunes(std::string_view text);

// Plain text of one GCIDE dictd entry: {cross-references} and \pronunciation\ markup removed,
// source lines such as "[1913 Webster]" dropped, lines left-trimmed, blank runs collapsed.
std::string clean_gcide_entry(std::string_view entry);

// True when `text` is well-formed UTF-8.
bool is_valid_utf8(std::string_view text);

}  // namespace lowrank::data
