// EAL runs once per process: rte_eal_init() cannot be called again, even after
// rte_eal_cleanup(). This is the one place that knows whether it has run.
#pragma once

#include <string>
#include <vector>

namespace fg {

// Initialise EAL with argv (program name first). Throws dp_error: ERR_EAL_ALREADY_INITIALIZED
// while it runs, ERR_EAL_FINISHED after eal_cleanup(), ERR_EAL_INIT when EAL refuses.
void eal_init(const std::vector<std::string> &args);
void eal_cleanup();

}  // namespace fg
