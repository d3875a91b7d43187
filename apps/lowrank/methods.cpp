// `lowrank methods`: lists every method family and its registered methods.
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/catalog.h"
#include "lowrank/core/json.h"

namespace lowrank::cli {

VerbRunner add_methods(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("methods", "List the method registries and their methods");
  auto family = std::make_shared<std::string>();
  cmd->add_option("--family", *family, "Only this family (adapt, optim, compress, ...)");
  return [family, &global] {
    auto families = method_families();
    if (!family->empty()) {
      std::erase_if(families, [&](const MethodFamily& f) { return f.name != *family; });
      LR_CHECK(!families.empty(), NotFound, "--family: unknown family \"", *family, "\"");
    }
    if (global.json) {
      OrderedJson out = OrderedJson::object();
      for (const auto& f : families) {
        OrderedJson methods = OrderedJson::array();
        for (const auto& m : f.methods) {
          OrderedJson options = OrderedJson::object();
          for (const auto& [k, v] : m.options) options[k] = v;
          methods.push_back(
              {{"name", m.name}, {"summary", m.summary}, {"paper", m.paper}, {"options", options}});
        }
        out[f.name] = {{"description", f.description}, {"methods", methods}};
      }
      std::cout << out.dump(2) << "\n";
      return;
    }
    for (const auto& f : families) {
      std::cout << f.name << " — " << f.description << "\n";
      if (f.methods.empty()) std::cout << "    (no methods registered yet)\n";
      for (const auto& m : f.methods) {
        std::cout << "    " << m.name << "  " << m.summary << (m.paper.empty() ? "" : "  [" + m.paper + "]")
                  << "\n";
        for (const auto& [k, v] : m.options) std::cout << "        --" << k << "  " << v << "\n";
      }
    }
  };
}

}  // namespace lowrank::cli
