// Corpus readers (corpus.h): Debian-packaged texts and user files, as lists of documents.
#include "lowrank/data/corpus.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <system_error>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"

namespace lowrank::data {

namespace fs = std::filesystem;

namespace {

constexpr const char* kBibleData = "/usr/lib/bible.data";
constexpr const char* kGcideIndex = "/usr/share/dictd/gcide.index";
constexpr const char* kGcideDict = "/usr/share/dictd/gcide.dict.dz";
constexpr const char* kFortuneDir = "/usr/share/games/fortunes";
constexpr const char* kCppIncludeDir = "/usr/include/c++";
constexpr const char* kIncludeDir = "/usr/include";

// Collects documents up to a limit, dropping empty and non-UTF-8 ones.
class Collector {
 public:
  Collector(Corpus& corpus, int64_t max_documents) : corpus_(corpus), max_(max_documents) {}
  bool full() const { return max_ >= 0 && static_cast<int64_t>(corpus_.documents.size()) >= max_; }
  void add(std::string source, std::string text) {
    if (full()) return;
    if (text.find_first_not_of(" \t\r\n") == std::string::npos || !is_valid_utf8(text)) {
      ++corpus_.skipped;
      return;
    }
    corpus_.bytes += static_cast<int64_t>(text.size());
    corpus_.documents.push_back({std::move(source), std::move(text)});
  }
  void skip() { ++corpus_.skipped; }

 private:
  Corpus& corpus_;
  int64_t max_;
};

std::string trim_blank_lines(std::string_view text) {
  std::size_t begin = 0;
  while (true) {
    const std::size_t nl = text.find('\n', begin);
    if (nl == std::string_view::npos) break;
    if (text.substr(begin, nl - begin).find_first_not_of(" \t\r") != std::string_view::npos) break;
    begin = nl + 1;
  }
  std::size_t end = text.size();
  while (end > begin &&
         (text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == ' ' || text[end - 1] == '\t'))
    --end;
  return std::string(text.substr(begin, end - begin));
}

// Regular files under `dir`, recursive, sorted by path.
std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) files.push_back(it->path());
  }
  LR_CHECK(!ec, IoError, dir.string(), ": cannot list the directory: ", ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

// One document per text file; binary files (a NUL byte) are skipped.
void add_files(const std::vector<fs::path>& files, Collector& out) {
  for (const auto& file : files) {
    if (out.full()) return;
    std::string text = read_text_file(file);
    if (text.find('\0') != std::string::npos) {
      out.skip();
      continue;
    }
    out.add(file.string(), std::move(text));
  }
}

void read_bible(Collector& out) {
  LR_CHECK(fs::exists(kBibleData), NotFound, "corpus bible: ", kBibleData,
           " is missing; install the Debian packages bible-kjv-text and bible-kjv");
  std::string program;
  for (const char* candidate : {"/usr/bin/bible", "/usr/games/bible"})
    if (fs::exists(candidate)) program = candidate;
  LR_CHECK(!program.empty(), NotFound,
           "corpus bible: the `bible` program is missing; install the Debian package bible-kjv "
           "(it decodes ",
           kBibleData, ")");
  const std::string command = program + " -f Gen1:1-Rev22:21 </dev/null 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  LR_CHECK(pipe != nullptr, IoError, "corpus bible: cannot run ", program);
  std::string text;
  char buffer[1 << 16];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) text.append(buffer, n);
  const int status = ::pclose(pipe);
  LR_CHECK(status == 0 && !text.empty(), IoError, "corpus bible: `", command, "` failed (status ", status,
           ")");
  // Lines "Ge1:1 In the beginning ..."; a chapter is the reference up to ':'.
  std::string chapter, body;
  std::size_t pos = 0;
  while (pos < text.size() && !out.full()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    const std::size_t space = line.find(' ');
    const std::size_t colon = line.find(':');
    if (colon != std::string_view::npos && colon < space) {
      const std::string_view key = line.substr(0, colon);
      if (key != chapter) {
        if (!chapter.empty()) out.add(chapter, std::move(body));
        chapter = std::string(key);
        body.clear();
      }
    }
    if (!line.empty()) body.append(line).push_back('\n');
  }
  if (!chapter.empty()) out.add(chapter, std::move(body));
}

int64_t decode_dictd_base64(std::string_view digits, std::string_view what) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  int64_t value = 0;
  LR_CHECK(!digits.empty() && digits.size() <= 8, Corruption, what, ": bad offset \"", digits, "\"");
  for (char c : digits) {
    const std::size_t d = kAlphabet.find(c);
    LR_CHECK(d != std::string_view::npos, Corruption, what, ": bad offset \"", digits, "\"");
    value = value * 64 + static_cast<int64_t>(d);
  }
  return value;
}

std::string gunzip_file(const fs::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  LR_CHECK(file != nullptr, IoError, path.string(), ": cannot open");
  std::string data;
  std::vector<char> buffer(1 << 20);
  int n;
  while ((n = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0)
    data.append(buffer.data(), n);
  int err = 0;
  const std::string message = n < 0 ? gzerror(file, &err) : "";
  gzclose(file);
  LR_CHECK(n == 0, Corruption, path.string(), ": not a readable gzip/dictzip file: ", message);
  return data;
}

void read_gcide(Collector& out) {
  LR_CHECK(fs::exists(kGcideIndex) && fs::exists(kGcideDict), NotFound, "corpus gcide: ", kGcideDict,
           " is missing; install the Debian package dict-gcide");
  const std::string index = read_text_file(kGcideIndex);
  // offset -> (length, first headword), in dictionary order.
  std::map<int64_t, std::pair<int64_t, std::string>> entries;
  std::size_t pos = 0;
  int64_t line_no = 0;
  while (pos < index.size()) {
    std::size_t nl = index.find('\n', pos);
    if (nl == std::string::npos) nl = index.size();
    const std::string_view line(index.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (line.empty()) continue;
    const std::size_t t1 = line.find('\t');
    const std::size_t t2 = t1 == std::string_view::npos ? t1 : line.find('\t', t1 + 1);
    LR_CHECK(t2 != std::string_view::npos, Corruption, kGcideIndex, ": line ", line_no,
             " is not \"word<TAB>offset<TAB>length\"");
    const std::string_view word = line.substr(0, t1);
    if (word.starts_with("00-")) continue;  // database metadata, not entries
    const std::string what = str(kGcideIndex, " line ", line_no);
    const int64_t offset = decode_dictd_base64(line.substr(t1 + 1, t2 - t1 - 1), what);
    const int64_t length = decode_dictd_base64(line.substr(t2 + 1), what);
    entries.try_emplace(offset, length, std::string(word));
  }
  const std::string dict = gunzip_file(kGcideDict);
  for (const auto& [offset, entry] : entries) {
    if (out.full()) break;
    LR_CHECK(offset + entry.first <= static_cast<int64_t>(dict.size()), Corruption, kGcideIndex, ": entry \"",
             entry.second, "\" points past the end of ", kGcideDict);
    out.add("gcide:" + entry.second, clean_gcide_entry(std::string_view(dict).substr(offset, entry.first)));
  }
}

void read_fortunes(Collector& out) {
  LR_CHECK(fs::is_directory(kFortuneDir), NotFound, "corpus fortunes: ", kFortuneDir,
           " is missing; install the Debian packages fortunes-min and fortunes");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kFortuneDir)) {
    const fs::path& path = entry.path();
    // The .u8 names are symlinks to the same files; .dat are strfile's binary indexes.
    if (entry.is_symlink() || !entry.is_regular_file() || path.extension() == ".dat" ||
        path.extension() == ".u8")
      continue;
    files.push_back(path);
  }
  std::sort(files.begin(), files.end());
  LR_CHECK(!files.empty(), NotFound, "corpus fortunes: no fortune files in ", kFortuneDir,
           "; install the Debian packages fortunes-min and fortunes");
  for (const auto& file : files) {
    const std::vector<std::string> pieces = split_fortunes(read_text_file(file));
    for (std::size_t k = 0; k < pieces.size(); ++k) out.add(str(file.string(), "#", k), pieces[k]);
  }
}

void read_cpp_headers(Collector& out) {
  fs::path newest;
  int newest_version = -1;
  if (fs::is_directory(kCppIncludeDir)) {
    for (const auto& entry : fs::directory_iterator(kCppIncludeDir)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_directory() || name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
        continue;
      const int version = std::stoi(name);
      if (version > newest_version) newest_version = version, newest = entry.path();
    }
  }
  LR_CHECK(newest_version >= 0, NotFound, "corpus cpp-headers: no ", kCppIncludeDir,
           "/<version> directory; install the Debian package build-essential (libstdc++-12-dev)");
  add_files(files_under(newest), out);
  std::vector<fs::path> c_headers;
  for (const auto& entry : fs::directory_iterator(kIncludeDir))
    if (entry.is_regular_file() && entry.path().extension() == ".h") c_headers.push_back(entry.path());
  std::sort(c_headers.begin(), c_headers.end());
  add_files(c_headers, out);
}

void read_path(const fs::path& path, Collector& out, Corpus& corpus) {
  if (fs::is_directory(path)) {
    corpus.unit = "file";
    add_files(files_under(path), out);
    return;
  }
  corpus.unit = "paragraph";
  const std::string text = read_text_file(path);
  LR_CHECK(text.find('\0') == std::string::npos, InvalidArgument, path.string(),
           ": holds a NUL byte; a corpus file must be text");
  // Paragraphs: runs of lines separated by one or more blank lines.
  std::string paragraph;
  int64_t index = 0;
  std::size_t pos = 0;
  auto flush = [&] {
    if (paragraph.empty()) return;
    while (!paragraph.empty() && paragraph.back() == '\n') paragraph.pop_back();
    out.add(str(path.string(), "#", index++), std::move(paragraph));
    paragraph.clear();
  };
  while (pos < text.size() && !out.full()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
      flush();
    } else {
      paragraph.append(line).push_back('\n');
    }
  }
  flush();
}

}  // namespace

std::vector<std::string> corpus_names() {
  return {"bible", "gcide", "fortunes", "cpp-headers"};
}

Corpus read_corpus(std::string_view name_or_path, int64_t max_documents) {
  LR_CHECK(!name_or_path.empty(), InvalidArgument, "--corpus: empty corpus name");
  Corpus corpus;
  corpus.name = std::string(name_or_path);
  Collector out(corpus, max_documents);
  if (name_or_path == "bible") {
    corpus.unit = "chapter";
    read_bible(out);
  } else if (name_or_path == "gcide") {
    corpus.unit = "entry";
    read_gcide(out);
  } else if (name_or_path == "fortunes") {
    corpus.unit = "fortune";
    read_fortunes(out);
  } else if (name_or_path == "cpp-headers") {
    corpus.unit = "file";
    read_cpp_headers(out);
  } else {
    const fs::path path(name_or_path);
    if (!fs::exists(path)) {
      std::string known;
      for (const auto& name : corpus_names()) known += (known.empty() ? "" : ", ") + name;
      throw InvalidArgument(str("corpus \"", name_or_path, "\" is neither a known corpus (", known,
                                ") nor an existing file or directory"));
    }
    read_path(path, out, corpus);
  }
  LR_CHECK(!corpus.documents.empty(), InvalidArgument, "corpus \"", name_or_path, "\" holds no documents",
           corpus.skipped ? str(" (", corpus.skipped, " skipped: empty, binary or not UTF-8)") : "");
  return corpus;
}

std::vector<std::string> split_fortunes(std::string_view text) {
  std::vector<std::string> pieces;
  std::size_t piece_begin = 0, pos = 0;
  auto emit = [&](std::size_t end) {
    std::string piece = trim_blank_lines(text.substr(piece_begin, end - piece_begin));
    if (!piece.empty()) pieces.push_back(std::move(piece));
  };
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    const std::size_t line_end = nl == std::string_view::npos ? text.size() : nl;
    std::string_view line = text.substr(pos, line_end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == "%") {
      emit(pos);
      piece_begin = line_end == text.size() ? text.size() : line_end + 1;
    }
    pos = line_end == text.size() ? text.size() : line_end + 1;
  }
  emit(text.size());
  return pieces;
}

std::string clean_gcide_entry(std::string_view entry) {
  std::string out;
  bool last_blank = true;  // no leading blank lines
  std::size_t pos = 0;
  while (pos < entry.size()) {
    std::size_t nl = entry.find('\n', pos);
    if (nl == std::string_view::npos) nl = entry.size();
    std::string_view line = entry.substr(pos, nl - pos);
    pos = nl + 1;
    const std::size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) {
      if (!last_blank) out.push_back('\n');
      last_blank = true;
      continue;
    }
    line.remove_prefix(first);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
    // Source lines: "[1913 Webster]", "[PJC]", "[Webster 1913 Suppl.]".
    if (line.front() == '[' && line.back() == ']' && line.find(']') == line.size() - 1) continue;
    std::string cleaned;
    for (std::size_t k = 0; k < line.size(); ++k) {
      const char c = line[k];
      if (c == '{' || c == '}') continue;
      if (c == '\\') {
        // \pronunciation\ spans end on the same line; an unmatched backslash is kept.
        const std::size_t close = line.find('\\', k + 1);
        if (close != std::string_view::npos) {
          k = close;
          if (k + 1 < line.size() && line[k + 1] == ' ' && !cleaned.empty() && cleaned.back() == ' ') ++k;
          continue;
        }
      }
      cleaned.push_back(c);
    }
    out.append(cleaned).push_back('\n');
    last_blank = false;
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool is_valid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (std::size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

}  // namespace lowrank::data
