// The playground: the one web page `lowrank serve` shows at `GET /` (a chat / completion form on
// the OpenAI API, a model and adapter chooser, sampling controls, streamed tokens with their
// log-probabilities on hover, a stop button, and the server's state from /metrics), and the runs'
// pages at `GET /runs` when the server was given a runs directory (analysis/run_report.h).
//
// The page is static HTML, CSS and vanilla JavaScript in serve/playground/, embedded into the
// library at configure time (serve/playground/embed.cmake); this file only names the assets and
// the headers they are served with. The HTTP transport (http_server.cpp) routes to them, as
// llama.cpp's server keeps its web UI apart from its HTTP, task and engine layers.
//
// Security (docs/serving.md): the page is same-origin only; its Content-Security-Policy allows
// scripts, styles and fetches from the server's own origin alone (no inline script: app.js is its
// own asset), and app.js inserts model text with textContent only.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowrank::serve {

struct PlaygroundAsset {
  std::string_view path;          // the URL path it is served at
  std::string_view content_type;  // with charset
  std::string_view body;
};

// "/" (index.html), "/playground/app.js", "/playground/style.css".
const std::vector<PlaygroundAsset>& playground_assets();

// The Content-Security-Policy of the playground's responses.
std::string_view playground_csp();
// The Content-Security-Policy of the run pages: no script at all, the report's inline style only.
std::string_view report_csp();
// Headers sent with every page and asset: the CSP given, no MIME sniffing, no referrer, no framing,
// same-origin opener and resource policy.
std::vector<std::pair<std::string, std::string>> page_headers(std::string_view csp);

// GET /runs: the runs under `runs_dir` (its subdirectories that analysis::read_run accepts, sorted
// by name), each a link to /runs/NAME; escaped HTML.
std::string runs_index_html(const std::filesystem::path& runs_dir);
// GET /runs/NAME: the report page of runs_dir/NAME. Throws NotFound when NAME is not a run
// directory directly under runs_dir (a name with '/', "..", or a leading '.' is refused).
std::string run_page_html(const std::filesystem::path& runs_dir, const std::string& name);

}  // namespace lowrank::serve
