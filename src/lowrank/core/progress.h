// A progress bar for long work. It draws on stderr only when stderr is a terminal (and the
// user did not silence it), so logs and pipes stay clean.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace lowrank {

class ProgressBar {
 public:
  // `total` units of work; `label` is shown before the bar.
  ProgressBar(int64_t total, std::string label);
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar();

  void advance(int64_t units = 1);
  // A short note shown after the bar (the current item, a loss value).
  void set_note(std::string note);
  void finish();

  // Global switch (the CLI's --quiet and --json turn bars off).
  static void set_enabled(bool enabled);
  static bool enabled();

 private:
  void draw(bool force);

  int64_t total_;
  int64_t done_ = 0;
  std::string label_;
  std::string note_;
  bool active_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace lowrank
