// Which Backend (kernels.hpp) this process runs: the CPU backend and
// run.device's choice. The interface itself belongs to module core; these
// functions belong to the backends' module, since they construct the
// backends (src/backend/cpu: cpu_backend.cpp, device.cpp).
#pragma once
#include <string>

#include "finemoe/kernels.hpp"

namespace finemoe {

// This process's CPU backend (one per rank; created on first use).
Backend& cpu_backend();

// "cpu" | "cuda".
std::string device_name(Device d);

// run.device ("cpu" | "cuda" | "auto") -> this process's backend, and in *why
// (if not null) one line saying why. cpu: the CPU backend; auto: the CPU
// backend ("auto: no CUDA backend built"); cuda: a ConfigError naming
// run.device (this build has no CUDA backend yet; it is planned). Anything
// else: a ConfigError naming run.device and the allowed values.
Backend& backend_for(const std::string& device, std::string* why = nullptr);

}  // namespace finemoe
