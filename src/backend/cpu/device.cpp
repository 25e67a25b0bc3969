// run.device: which Backend this process runs (device.hpp, backend_for).
// This build has the CPU backend only; the CUDA backend (src/backend/cuda) is
// planned, and until it exists `cuda` is refused by name and `auto` means cpu.
#include "finemoe/device.hpp"
#include "finemoe/error.hpp"

namespace finemoe {

std::string device_name(Device d) { return d == Device::cuda ? "cuda" : "cpu"; }

Backend& backend_for(DeviceChoice device, std::string* why) {
  std::string reason;
  switch (device) {
    case DeviceChoice::cpu:
      reason = "cpu requested";
      break;
    case DeviceChoice::automatic:
      reason = "auto: no CUDA backend built, so cpu";
      break;
    case DeviceChoice::cuda:
      throw ConfigError("config key 'run.device': cuda requested, but this build has no CUDA backend yet (it is "
                        "planned); use cpu or auto");
  }
  if (why) *why = reason;
  return cpu_backend();
}

}  // namespace finemoe
