// Errors of the control plane. Lcores never throw; control-thread code throws dp_error and
// the addon turns it into a JavaScript Error with the same code (and errno when known).
#pragma once

#include <stdexcept>
#include <string>

namespace fg {

struct dp_error : std::runtime_error {
  const char *code;  // one of the ERR_FLOWGATE_* constants below
  int err;           // positive errno, or 0

  dp_error(const char *c, const std::string &message, int e = 0)
      : std::runtime_error(message), code(c), err(e) {}
};

// Stable error codes shared with lib/errors.ts users.
inline constexpr const char *ERR_EAL_ALREADY_INITIALIZED = "ERR_FLOWGATE_EAL_ALREADY_INITIALIZED";
inline constexpr const char *ERR_EAL_FINISHED = "ERR_FLOWGATE_EAL_FINISHED";
inline constexpr const char *ERR_EAL_INIT = "ERR_FLOWGATE_EAL_INIT";
inline constexpr const char *ERR_NOT_INITIALIZED = "ERR_FLOWGATE_NOT_INITIALIZED";
inline constexpr const char *ERR_NO_MEMORY = "ERR_FLOWGATE_NO_MEMORY";
inline constexpr const char *ERR_DEVICE = "ERR_FLOWGATE_DEVICE";
inline constexpr const char *ERR_PORT_CONFIG = "ERR_FLOWGATE_PORT_CONFIG";
inline constexpr const char *ERR_PORT_IN_USE = "ERR_FLOWGATE_PORT_IN_USE";
inline constexpr const char *ERR_NOT_FOUND = "ERR_FLOWGATE_NOT_FOUND";
inline constexpr const char *ERR_INVALID_ARGUMENT = "ERR_FLOWGATE_INVALID_ARGUMENT";
inline constexpr const char *ERR_FLOW_EXISTS = "ERR_FLOWGATE_FLOW_EXISTS";
inline constexpr const char *ERR_FLOWTABLE_FULL = "ERR_FLOWGATE_FLOWTABLE_FULL";
inline constexpr const char *ERR_LIMIT = "ERR_FLOWGATE_LIMIT";
inline constexpr const char *ERR_STATE = "ERR_FLOWGATE_STATE";

}  // namespace fg
