// Which Backend (kernels.hpp) this process runs: the CPU backend and
// run.device's choice. The interface itself belongs to module core; these
// functions belong to the backends' module, since they construct the
// backends (src/backend/cpu: cpu_backend.cpp, device.cpp).
#pragma once
#include <string>

#include "finemoe/config.hpp"
#include "finemoe/kernels.hpp"

namespace finemoe {

// This process's CPU backend (one per rank; created on first use).
Backend& cpu_backend();

// "cpu" | "cuda".
std::string device_name(Device d);

// run.device -> this process's backend, and in *why (if not null) one line
// saying why. cpu: the CPU backend; auto: the CPU backend ("auto: no CUDA
// backend built"); cuda: a ConfigError naming run.device (this build has no
// CUDA backend yet; it is planned). Names other than these never get here:
// Config refuses them when the key is set.
Backend& backend_for(DeviceChoice device, std::string* why = nullptr);

}  // namespace finemoe
