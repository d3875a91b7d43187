// The playground's assets, headers and run pages (see playground.h).
#include "lowrank/serve/playground.h"

#include <algorithm>
#include <cctype>

#include "lowrank/analysis/run_report.h"
#include "lowrank/core/error.h"
#include "lowrank/core/svg.h"

namespace lowrank::serve {

// Defined in the source that serve/playground/embed.cmake generates from the page's files.
namespace playground_files {
extern const std::string_view kIndexHtml, kAppJs, kStyleCss;
}

namespace fs = std::filesystem;

const std::vector<PlaygroundAsset>& playground_assets() {
  static const std::vector<PlaygroundAsset> assets = {
      {"/", "text/html; charset=utf-8", playground_files::kIndexHtml},
      {"/playground/app.js", "text/javascript; charset=utf-8", playground_files::kAppJs},
      {"/playground/style.css", "text/css; charset=utf-8", playground_files::kStyleCss},
  };
  return assets;
}

std::string_view playground_csp() {
  return "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
         "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

std::string_view report_csp() {
  return "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
         "frame-ancestors 'none'";
}

std::vector<std::pair<std::string, std::string>> page_headers(std::string_view csp) {
  return {{"Content-Security-Policy", std::string(csp)},
          {"X-Content-Type-Options", "nosniff"},
          {"Referrer-Policy", "no-referrer"},
          {"X-Frame-Options", "DENY"},
          {"Cross-Origin-Opener-Policy", "same-origin"},
          {"Cross-Origin-Resource-Policy", "same-origin"},
          {"Cache-Control", "no-cache"}};
}

namespace {

bool plain_name(const std::string& name) {
  return !name.empty() && name.front() != '.' && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

}  // namespace

std::string runs_index_html(const fs::path& runs_dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(runs_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !plain_name(name)) continue;
    try {
      analysis::read_run(entry.path());
      names.push_back(name);
    } catch (const Error&) {
      // Not a run directory: left out of the list.
    }
  }
  std::sort(names.begin(), names.end());
  std::string items;
  for (const std::string& n : names) {
    // The link is the name percent-encoded where it is not a plain URL character.
    std::string href = "/runs/";
    for (unsigned char c : n) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        href += static_cast<char>(c);
      } else {
        static const char* kHex = "0123456789ABCDEF";
        href += '%';
        href += kHex[c >> 4];
        href += kHex[c & 15];
      }
    }
    items += "<li><a href=\"" + xml_escape(href) + "\">" + xml_escape(n) + "</a></li>\n";
  }
  if (items.empty()) items = "<li>no run directory yet</li>\n";
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>runs</title>\n"
         "<link rel=\"icon\" href=\"data:,\">"
         "<style>body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 24px; }</style>"
         "</head>\n<body><h1>Runs</h1>\n<ul>\n" +
         items + "</ul></body></html>\n";
}

std::string run_page_html(const fs::path& runs_dir, const std::string& name) {
  LR_CHECK(plain_name(name) && name != "..", NotFound, "no run named '", name, "'");
  const fs::path dir = runs_dir / name;
  LR_CHECK(fs::is_directory(dir), NotFound, "no run named '", name, "'");
  return analysis::run_report_html({analysis::read_run(dir)}, "Run " + name);
}

}  // namespace lowrank::serve
