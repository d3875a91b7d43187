// Unicode Normalization Form C (UAX #15), for the `NFC` normalizer of `tokenizer.json` (Qwen2's
// files declare it). Hugging Face `tokenizers` (normalizers/unicode.rs) uses the Rust crate
// `unicode-normalization`; this is the standard algorithm over tables generated from Python's
// unicodedata (tokenizer_nfc_data.h): canonical decomposition (recursive, Hangul algorithmic),
// canonical ordering of combining marks by Canonical_Combining_Class, then canonical composition
// of each unblocked mark with the last starter.
#include <algorithm>
#include <iterator>

#include "lowrank/data/tokenizer_internal.h"
#include "lowrank/data/tokenizer_nfc_data.h"

namespace lowrank::data::detail {

namespace {

// Hangul syllables (Unicode §3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto& table = nfc_data::kCombiningClass;
  auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                             [](char32_t v, const nfc_data::CombiningRange& r) { return v < r.first; });
  if (it == std::begin(table)) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

const nfc_data::Decomposition* find_decomposition(char32_t cp) {
  const auto& table = nfc_data::kDecomposition;
  auto it = std::lower_bound(std::begin(table), std::end(table), cp,
                             [](const nfc_data::Decomposition& d, char32_t v) { return d.cp < v; });
  return it != std::end(table) && it->cp == cp ? it : nullptr;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out += kLBase + s / kNCount;
    out += kVBase + (s % kNCount) / kTCount;
    if (s % kTCount != 0) out += kTBase + s % kTCount;
    return;
  }
  const nfc_data::Decomposition* d = cp < 0xC0 ? nullptr : find_decomposition(cp);
  if (d == nullptr) {
    out += cp;
    return;
  }
  decompose(d->a, out);
  if (d->b != 0) decompose(d->b, out);
}

// The primary composite of (a, b), or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  struct Pair {
    char32_t a, b, composite;
  };
  static const std::vector<Pair> pairs = [] {
    std::vector<Pair> list;
    for (const auto& d : nfc_data::kDecomposition)
      if (d.composes) list.push_back({d.a, d.b, d.cp});
    std::sort(list.begin(), list.end(),
              [](const Pair& x, const Pair& y) { return std::tie(x.a, x.b) < std::tie(y.a, y.b); });
    return list;
  }();
  auto it = std::lower_bound(pairs.begin(), pairs.end(), Pair{a, b, 0}, [](const Pair& x, const Pair& y) {
    return std::tie(x.a, x.b) < std::tie(y.a, y.b);
  });
  return it != pairs.end() && it->a == a && it->b == b ? it->composite : 0;
}

}  // namespace

std::string nfc(std::string_view text) {
  // Code points below U+0300 are starters that decompose to themselves, except for Latin-1 and
  // Latin Extended letters with marks, which are already composed: NFC leaves text made only of
  // them unchanged.
  bool simple = true;
  for (std::size_t i = 0; i < text.size() && simple;) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    simple = next_code_point(text, i) < 0x300;
  }
  if (simple) return std::string(text);

  std::u32string decomposed;
  decomposed.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) decompose(next_code_point(text, i), decomposed);
  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  for (std::size_t i = 0; i < decomposed.size();) {
    if (combining_class(decomposed[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < decomposed.size() && combining_class(decomposed[j]) != 0) ++j;
    std::stable_sort(decomposed.begin() + static_cast<std::ptrdiff_t>(i),
                     decomposed.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t x, char32_t y) { return combining_class(x) < combining_class(y); });
    i = j;
  }
  // Canonical composition: C composes with the last starter L unless a character between them
  // is a starter or has a class >= C's.
  std::u32string composed;
  composed.reserve(decomposed.size());
  std::ptrdiff_t starter = -1;
  uint8_t last_class = 0;  // class of the last character kept after the starter
  for (char32_t c : decomposed) {
    const uint8_t cc = combining_class(c);
    if (starter >= 0) {
      const bool adjacent = static_cast<std::ptrdiff_t>(composed.size()) - 1 == starter;
      if (adjacent || (last_class != 0 && last_class < cc)) {
        if (const char32_t composite = compose(composed[starter], c)) {
          composed[starter] = composite;
          continue;
        }
      }
    }
    if (cc == 0) {
      starter = static_cast<std::ptrdiff_t>(composed.size());
      last_class = 0;
    } else {
      last_class = cc;
    }
    composed += c;
  }
  std::string out;
  out.reserve(text.size());
  for (char32_t c : composed) append_utf8(out, c);
  return out;
}

}  // namespace lowrank::data::detail
