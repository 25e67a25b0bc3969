#include <gtest/gtest.h>

#include "finemoe/error.hpp"
#include "finemoe/params.hpp"

using namespace finemoe;

TEST(ParamStore, ClassesOffsetsAndAlignment) {
  ParamStore s(2, 1);
  s.add("a", {3, 5}, ParamClass::replicated);
  s.add("b", {7}, ParamClass::replicated);
  s.add("e", {8, 4, 3}, ParamClass::expert);
  s.finalize();
  const ParamInfo& e = s.info("e");
  EXPECT_EQ(e.local_rows, 4);
  EXPECT_EQ(e.row0, 4);
  EXPECT_EQ(e.local_count, 48);
  EXPECT_TRUE(s.info("a").decay);
  EXPECT_FALSE(s.info("b").decay);
  for (const auto& p : s.params())
    EXPECT_EQ(reinterpret_cast<uintptr_t>(s.param(p.name)) % 64, 0u) << p.name;
  s.param("b")[6] = 1.5f;
  EXPECT_EQ(s.params(ParamClass::replicated)[s.info("b").offset + 6], 1.5f);
  EXPECT_THROW(s.info("nope"), Error);
}

TEST(ParamStore, ExpertRowsMustDivide) {
  ParamStore s(3, 0);
  EXPECT_THROW(s.add("e", {8, 2}, ParamClass::expert), Error);
  ParamStore t;
  t.add("x", {2}, ParamClass::replicated);
  EXPECT_THROW(t.add("x", {2}, ParamClass::replicated), Error);
}

// Buffers: non-trainable state beside the parameters (no gradient, no
// moments, not in params(), so neither the optimizer nor the gradient sync
// sees them), whole on every rank, zero after finalize().
TEST(ParamStore, BuffersAreSeparateZeroedAndWhole) {
  ParamStore s(2, 1);
  s.add("r", {4, 8}, ParamClass::replicated);
  s.add_buffer("bias", {8});
  s.add_buffer("grid", {2, 3});
  s.add("e", {8, 2}, ParamClass::expert);
  EXPECT_THROW(s.add_buffer("r", {4}), Error);     // a parameter's name
  EXPECT_THROW(s.add_buffer("bias", {4}), Error);  // twice
  EXPECT_THROW(s.add("bias", {8}, ParamClass::replicated), Error);
  s.finalize();
  EXPECT_THROW(s.add_buffer("late", {1}), Error);
  ASSERT_EQ(s.params().size(), 2u);
  ASSERT_EQ(s.buffers().size(), 2u);
  EXPECT_TRUE(s.has_buffer("grid"));
  EXPECT_FALSE(s.has_buffer("r"));
  EXPECT_FALSE(s.has("bias"));
  EXPECT_EQ(s.buffers()[1].count, 6);
  for (const auto& b : s.buffers()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(s.buffer(b.name)) % 64, 0u) << b.name;
    for (int64_t i = 0; i < b.count; ++i) EXPECT_EQ(s.buffer(b.name)[i], 0.0f);
  }
  s.buffer("bias")[7] = 2.5f;
  s.buffer("grid")[0] = -1.0f;
  EXPECT_EQ(s.buffer("bias")[7], 2.5f);
  EXPECT_THROW(s.buffer("nope"), Error);
  // Parameters and their gradients are untouched by buffer writes.
  for (int c = 0; c < kNumParamClasses; ++c)
    for (float x : s.params(ParamClass(c))) EXPECT_EQ(x, 0.0f);
}
