#include "lowrank/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>

namespace lowrank {
namespace {
std::atomic<bool> g_enabled{true};
}

void ProgressBar::set_enabled(bool enabled) {
  g_enabled = enabled;
}
bool ProgressBar::enabled() {
  return g_enabled && ::isatty(STDERR_FILENO);
}

ProgressBar::ProgressBar(int64_t total, std::string label)
    : total_(std::max<int64_t>(total, 1)),
      label_(std::move(label)),
      active_(enabled()),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  draw(true);
}

ProgressBar::~ProgressBar() {
  finish();
}

void ProgressBar::advance(int64_t units) {
  done_ = std::min(total_, done_ + units);
  draw(done_ == total_);
}

void ProgressBar::set_note(std::string note) {
  note_ = std::move(note);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!active_) return;
  draw(true);
  std::fputc('\n', stderr);
}

void ProgressBar::draw(bool force) {
  if (!active_) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  constexpr int kWidth = 30;
  double frac = static_cast<double>(done_) / static_cast<double>(total_);
  int filled = static_cast<int>(frac * kWidth);
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double eta = done_ > 0 ? elapsed * static_cast<double>(total_ - done_) / static_cast<double>(done_) : 0.0;
  char bar[kWidth + 1];
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
  bar[kWidth] = '\0';
  std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %5.1fs eta %5.1fs %s", label_.c_str(), bar,
               static_cast<long long>(done_), static_cast<long long>(total_), elapsed, eta, note_.c_str());
  std::fflush(stderr);
}

}  // namespace lowrank
