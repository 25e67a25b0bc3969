#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "../backend/scrambled_backend.hpp"
#include "finemoe/device.hpp"
#include "finemoe/error.hpp"
#include "finemoe/params.hpp"

using namespace finemoe;

namespace {

// n floats at `p`, a pointer of `be`'s memory, through the explicit copy.
std::vector<float> to_host(Backend& be, const float* p, int64_t n) {
  std::vector<float> h(static_cast<size_t>(n));
  be.copy_to_host(h.data(), p, n * int64_t(sizeof(float)));
  return h;
}

}  // namespace

TEST(ParamStore, ClassesOffsetsAndAlignment) {
  ParamStore s(2, 1);
  s.add("a", {3, 5}, ParamClass::replicated);
  s.add("b", {7}, ParamClass::replicated);
  s.add("e", {8, 4, 3}, ParamClass::expert);
  s.finalize(cpu_backend());
  const ParamInfo& e = s.info("e");
  EXPECT_EQ(e.local_rows, 4);
  EXPECT_EQ(e.row0, 4);
  EXPECT_EQ(e.local_count, 48);
  EXPECT_TRUE(s.info("a").decay);
  EXPECT_FALSE(s.info("b").decay);
  for (const auto& p : s.params())
    EXPECT_EQ(reinterpret_cast<uintptr_t>(s.param(p.name)) % 64, 0u) << p.name;
  s.param("b")[6] = 1.5f;  // CPU backend: host memory, written directly
  const DeviceBuffer<float>& rep = s.params(ParamClass::replicated);
  EXPECT_EQ(to_host(s.backend(), rep.data(), rep.size())[size_t(s.info("b").offset + 6)], 1.5f);
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
  s.finalize(cpu_backend());
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
  for (int c = 0; c < kNumParamClasses; ++c) {
    for (const DeviceBuffer<float>* b : {&s.params(ParamClass(c)), &s.grads(ParamClass(c))})
      for (float x : to_host(s.backend(), b->data(), b->size())) EXPECT_EQ(x, 0.0f);
  }
}

// The store's memory is its backend's: finalize(be) allocates every class
// buffer, moment and buffer through be (nothing before), every pointer it
// hands out lies in those allocations, zero_grads is be's fill_zero, and the
// values are reached through be's explicit copies. The scrambled backend's
// memory reads as garbage on the host, so a direct access would show.
TEST(ParamStore, MemoryIsItsBackends) {
  finemoe::testing::ScrambledBackend be;
  {
    ParamStore s(2, 1);
    s.add("a", {3, 5}, ParamClass::replicated);  // 15 elements, padded to 16
    s.add("e", {8, 4, 3}, ParamClass::expert);   // this rank: rows 4..7, 48 elements
    s.add_buffer("bias", {8});
    EXPECT_FALSE(s.finalized());
    EXPECT_THROW(s.backend(), Error);
    EXPECT_THROW(s.param("a"), Error);
    EXPECT_THROW(s.params(ParamClass::replicated), Error);
    EXPECT_EQ(be.counts.allocate, 0);
    s.finalize(be);
    EXPECT_TRUE(s.finalized());
    EXPECT_THROW(s.finalize(be), Error);
    EXPECT_EQ(&s.backend(), &be);
    // Per class: params, grads, two moments; one array for the buffers.
    EXPECT_EQ(be.counts.allocate, 9);
    EXPECT_EQ(be.live().size(), 9u);
    const int64_t sizes[kNumParamClasses] = {16, 48};
    for (int c = 0; c < kNumParamClasses; ++c) {
      const ParamClass cls = ParamClass(c);
      for (DeviceBuffer<float>* b : {&s.params(cls), &s.grads(cls), &s.moments_m(cls), &s.moments_v(cls)}) {
        EXPECT_EQ(&b->backend(), &be);
        EXPECT_EQ(b->size(), sizes[c]);
        EXPECT_TRUE(be.owns(b->data(), b->size() * 4));
        for (float x : to_host(be, b->data(), b->size())) EXPECT_EQ(x, 0.0f);
      }
    }
    for (const ParamInfo& p : s.params())
      for (const float* t : {s.param(p.name), s.grad(p.name), s.adam_m(p.name), s.adam_v(p.name)})
        EXPECT_TRUE(be.owns(t, p.local_count * 4)) << p.name;
    EXPECT_TRUE(be.owns(s.buffer("bias"), 8 * 4));
    for (float x : to_host(be, s.buffer("bias"), 8)) EXPECT_EQ(x, 0.0f);
    float raw;  // the premise: read directly, backend memory is not the values
    std::memcpy(&raw, s.param("a"), sizeof raw);
    EXPECT_NE(raw, 0.0f);

    // Values go in and out through the explicit copies, bit for bit.
    std::vector<float> g(48);
    for (size_t i = 0; i < g.size(); ++i) g[i] = float(i) * -0.37f + 1e-30f;
    be.copy_from_host(s.grad("e"), g.data(), 48 * 4);
    const std::vector<float> back = to_host(be, s.grad("e"), 48);
    EXPECT_EQ(std::memcmp(back.data(), g.data(), 48 * 4), 0);
    const int64_t fills = be.counts.fill_zero;
    s.zero_grads();
    EXPECT_EQ(be.counts.fill_zero - fills, kNumParamClasses);  // one fill_zero per class
    for (float x : to_host(be, s.grad("e"), 48)) EXPECT_EQ(x, 0.0f);

    // Kernels of another backend are refused.
    EXPECT_NO_THROW(s.require_backend(be, "test"));
    EXPECT_THROW(s.require_backend(cpu_backend(), "test"), Error);

    ParamStore moved = std::move(s);  // the memory moves with the store
    EXPECT_EQ(&moved.backend(), &be);
    EXPECT_EQ(be.counts.deallocate, 0);
  }
  EXPECT_EQ(be.counts.allocate, 9);  // nothing else was allocated
  EXPECT_EQ(be.counts.deallocate, 9);
  EXPECT_TRUE(be.live().empty());
}
