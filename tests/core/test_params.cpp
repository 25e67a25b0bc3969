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
