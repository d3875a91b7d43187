// A name -> factory registry with PEFT-style validation, one per method family
// (adapt::registry(), optim::registry(), ...). Families fill theirs in one explicit
// register_builtin_<family>() function; there is no static self-registration.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "lowrank/core/error.h"

namespace lowrank {

// What `lowrank methods` shows of an entry.
struct MethodInfo {
  std::string name;     // lowercase, unique within its family: "lora", "galore"
  std::string summary;  // one line
  std::string paper;    // citation, e.g. "Hu et al., 2021, arXiv:2106.09685"
  std::vector<std::pair<std::string, std::string>> options;  // option name -> help
};

template <typename Factory>
class Registry {
 public:
  explicit Registry(std::string family) : family_(std::move(family)) {}

  // The registry of `family` filled by `fill` (the family's register_builtin_methods): what each
  // family's registry() keeps in its function-local static, built once on first use.
  static Registry built(std::string family, void (*fill)(Registry&)) {
    Registry r(std::move(family));
    fill(r);
    return r;
  }

  // Throws InvalidArgument for a name that is empty, not lowercase [a-z0-9_-], or taken.
  void add(MethodInfo info, Factory factory) {
    // A copy: `info` is moved into the entry below, and the key must not be read after that.
    const std::string n = info.name;
    bool ok = !n.empty() && n.back() != '_' && std::all_of(n.begin(), n.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
    LR_CHECK(ok, InvalidArgument, family_, " registry: invalid method name \"", n, "\"");
    LR_CHECK(!entries_.count(n), InvalidArgument, family_, " registry: \"", n, "\" registered twice");
    // The key is copied first: `n` refers to info.name, which the Entry below moves from.
    std::string key = n;
    entries_.emplace(std::move(key), Entry{std::move(info), std::move(factory)});
  }

  // Throws NotFound listing the known names.
  const Factory& factory(const std::string& name) const { return find(name).factory; }
  const MethodInfo& info(const std::string& name) const { return find(name).info; }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }

  std::vector<MethodInfo> list() const {
    std::vector<MethodInfo> out;
    for (const auto& [_, e] : entries_) out.push_back(e.info);
    return out;
  }
  const std::string& family() const { return family_; }

 private:
  struct Entry {
    MethodInfo info;
    Factory factory;
  };
  const Entry& find(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string known;
      for (const auto& [k, _] : entries_) known += (known.empty() ? "" : ", ") + k;
      throw NotFound(str("unknown ", family_, " method \"", name,
                         "\" (known: ", known.empty() ? "none yet" : known, ")"));
    }
    return it->second;
  }

  std::string family_;
  std::map<std::string, Entry> entries_;
};

}  // namespace lowrank
