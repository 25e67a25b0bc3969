// Runs with ONEDNN_MAX_CPU_ISA=AVX2 (CTest ENVIRONMENT): a CPU without bf16.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "finemoe/backend.hpp"
#include "finemoe/error.hpp"

namespace be = finemoe::backend;

TEST(precision, environment_caps_onednn_at_avx2) {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  ASSERT_NE(cap, nullptr) << "test must run with ONEDNN_MAX_CPU_ISA=AVX2";
  if (be::cpu_isa() == "none") GTEST_SKIP() << "no oneDNN in this build";
  EXPECT_EQ(be::cpu_isa(), "avx2");
}

TEST(precision, auto_picks_fp32_without_bf16) {
  std::string why;
  EXPECT_EQ(be::resolve_precision(finemoe::PrecisionChoice::automatic, &why), be::Precision::fp32);
  EXPECT_EQ(why.rfind("auto: fp32", 0), 0u) << why;
  EXPECT_FALSE(be::bf16_available());
  EXPECT_FALSE(be::has_amx());
}

TEST(precision, bf16_requested_where_unavailable_is_a_clear_error) {
  std::string why;
  try {
    be::resolve_precision(finemoe::PrecisionChoice::bf16, &why);
    FAIL() << "bf16 accepted on an AVX2-capped oneDNN";
  } catch (const finemoe::ConfigError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("train.precision"), std::string::npos) << m;
    EXPECT_NE(m.find("bf16"), std::string::npos) << m;
  }
  EXPECT_THROW(be::set_precision(be::Precision::bf16), finemoe::Error);
  EXPECT_EQ(be::precision(), be::Precision::fp32);
}
