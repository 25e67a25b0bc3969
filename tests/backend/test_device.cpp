// run.device -> the rank's Backend (device.hpp backend_for): cpu and auto
// give the CPU backend with a reason; this build has no CUDA backend, so cuda
// is a ConfigError naming run.device (exit 2), as is any other value.
#include <gtest/gtest.h>

#include <string>

#include "finemoe/device.hpp"
#include "finemoe/error.hpp"
#include "finemoe/kernels.hpp"

namespace {

using namespace finemoe;

TEST(Device, CpuAndAutoResolveToTheCpuBackend) {
  std::string why;
  Backend& a = backend_for(DeviceChoice::cpu, &why);
  EXPECT_EQ(&a, &cpu_backend());
  EXPECT_EQ(a.device(), Device::cpu);
  EXPECT_EQ(why, "cpu requested");
  Backend& b = backend_for(DeviceChoice::automatic, &why);
  EXPECT_EQ(&b, &cpu_backend());
  EXPECT_EQ(why, "auto: no CUDA backend built, so cpu");
  EXPECT_EQ(&backend_for(DeviceChoice::automatic), &cpu_backend());  // why is optional
  EXPECT_EQ(device_name(Device::cpu), "cpu");
  EXPECT_EQ(device_name(Device::cuda), "cuda");
  EXPECT_EQ(a.describe().rfind("cpu: ", 0), 0u) << a.describe();
}

TEST(Device, CudaIsRefusedNamingTheKey) {
  std::string why = "unchanged";
  try {
    backend_for(DeviceChoice::cuda, &why);
    FAIL() << "cuda resolved in a build without a CUDA backend";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("config key 'run.device'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("no CUDA backend"), std::string::npos) << msg;
    EXPECT_NE(msg.find("planned"), std::string::npos) << msg;
    EXPECT_EQ(e.exit_code(), kExitUsage);
  }
  EXPECT_EQ(why, "unchanged");
}

// Other names never reach backend_for: config parsing refuses them
// (core.Config.EnumKeysRoundTripAndRefuseOtherNames).

}  // namespace
