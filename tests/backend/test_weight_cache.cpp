// The bf16 weight cache (backend.hpp): a GEMM whose B is a registered weight
// uses a bf16 copy made once per epoch. It must give exactly the result of
// converting B in the call, see new weights after weights_updated(), and be
// filled before (not inside) grouped_gemm's parallel loop.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "finemoe/backend.hpp"
#include "finemoe/memory.hpp"

namespace be = finemoe::backend;
using finemoe::Buffer;

namespace {

void fill(float* p, int64_t n, uint32_t seed) {
  uint32_t s = seed;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    p[i] = float(int32_t(s >> 8) % 2000 - 1000) / 997.0f;
  }
}

struct Bf16Scope {  // bf16 precision and a cache mode for one test
  be::Precision saved_p = be::precision();
  be::WeightCacheMode saved_m = be::weight_cache_mode();
  explicit Bf16Scope(be::WeightCacheMode m) {
    be::set_precision(be::Precision::bf16);
    be::set_weight_cache_mode(m);
  }
  ~Bf16Scope() {
    be::clear_registered_weights();
    be::set_weight_cache_mode(saved_m);
    be::set_precision(saved_p);
  }
};

bool skip_without_bf16(std::string* why) { return !be::bf16_available(why); }

// x·W (forward) and dout·Wᵀ (backward dx) with W a sub-block of a registered
// arena, compared bit for bit against the same GEMMs with W unregistered.
void check_mode(be::WeightCacheMode mode) {
  const int64_t M = 37, K = 96, N = 80, ldw = N + 8;
  Buffer<float> arena(size_t(1000 + K * ldw)), x(size_t(M * K)), dout(size_t(M * N));
  float* W = arena.data() + 1000;
  fill(W, K * ldw, 3);
  fill(x.data(), M * K, 4);
  fill(dout.data(), M * N, 5);
  Buffer<float> y_ref(size_t(M * N)), dx_ref(size_t(M * K)), y(size_t(M * N)), dx(size_t(M * K));
  Bf16Scope scope(mode);
  auto run = [&](float* yo, float* dxo) {
    be::gemm(false, false, M, N, K, 1.0f, x.data(), K, W, ldw, 0.0f, yo, N);
    be::gemm(false, true, M, K, N, 1.0f, dout.data(), N, W, ldw, 0.0f, dxo, K);
  };
  run(y_ref.data(), dx_ref.data());  // not registered: converted in the call
  const auto before = be::weight_cache_stats();
  be::register_weights(arena.data(), int64_t(arena.size()));
  for (int rep = 0; rep < 3; ++rep) {
    run(y.data(), dx.data());
    for (int64_t i = 0; i < M * N; ++i) ASSERT_EQ(y[i], y_ref[i]) << "y[" << i << "] rep " << rep;
    for (int64_t i = 0; i < M * K; ++i) ASSERT_EQ(dx[i], dx_ref[i]) << "dx[" << i << "] rep " << rep;
  }
  const auto after = be::weight_cache_stats();
  // plain: one copy shared by both uses; blocked: one per use. Then hits only.
  const int64_t copies = mode == be::WeightCacheMode::plain ? 1 : 2;
  EXPECT_EQ(after.conversions - before.conversions, copies);
  EXPECT_EQ(after.hits - before.hits, 6 - copies);
  EXPECT_GE(after.bytes, copies * K * N * 2);

  // A changed weight is seen after weights_updated(), not before.
  for (int64_t i = 0; i < K * ldw; ++i) W[i] *= -0.5f;
  Buffer<float> y_new_ref(size_t(M * N));
  be::clear_registered_weights();
  be::gemm(false, false, M, N, K, 1.0f, x.data(), K, W, ldw, 0.0f, y_new_ref.data(), N);
  be::register_weights(arena.data(), int64_t(arena.size()));
  run(y.data(), dx.data());
  for (int64_t i = 0; i < M * N; ++i) ASSERT_EQ(y[i], y_new_ref[i]) << "after re-registering, y[" << i << "]";
  for (int64_t i = 0; i < K * ldw; ++i) W[i] *= 2.0f;
  be::weights_updated();
  run(y.data(), dx.data());
  // Doubling is exact in bf16 and in every fp32 product and sum: y doubles exactly.
  for (int64_t i = 0; i < M * N; ++i) ASSERT_EQ(y[i], 2.0f * y_new_ref[i]) << "after weights_updated(), y[" << i << "]";
}

}  // namespace

TEST(weight_cache, plain_copy_is_bit_identical_and_converted_once_per_epoch) {
  std::string why;
  if (skip_without_bf16(&why)) GTEST_SKIP() << why;
  check_mode(be::WeightCacheMode::plain);
}

TEST(weight_cache, blocked_copy_is_bit_identical_and_converted_once_per_use_and_epoch) {
  std::string why;
  if (skip_without_bf16(&why)) GTEST_SKIP() << why;
  check_mode(be::WeightCacheMode::blocked);
}

// Experts: grouped_gemm over slices of one registered weight tensor. The copies
// are made in the serial preparation, so every problem of the parallel loop
// hits the cache, and the result equals the unregistered one bit for bit.
TEST(weight_cache, grouped_gemm_converts_before_its_parallel_loop) {
  std::string why;
  if (skip_without_bf16(&why)) GTEST_SKIP() << why;
  for (auto mode : {be::WeightCacheMode::plain, be::WeightCacheMode::blocked}) {
    const int64_t count = 24, K = 64, N = 48;
    Buffer<float> w(size_t(count * K * N)), x(size_t(count * 16 * K));
    fill(w.data(), int64_t(w.size()), 7);
    fill(x.data(), int64_t(x.size()), 8);
    std::vector<int64_t> rows(count);
    std::vector<const float*> pa(count), pb(count);
    Buffer<float> c_ref(size_t(count * 16 * N)), c(size_t(count * 16 * N));
    std::vector<float*> pc_ref(count), pc(count);
    for (int64_t g = 0; g < count; ++g) {
      rows[g] = g % 5 == 0 ? 0 : 16 - g % 3;  // some empty experts, uneven sizes
      pa[g] = x.data() + g * 16 * K;
      pb[g] = w.data() + g * K * N;
      pc_ref[g] = c_ref.data() + g * 16 * N;
      pc[g] = c.data() + g * 16 * N;
    }
    Bf16Scope scope(mode);
    be::set_grouped_variant(be::GroupedVariant::omp_loop);
    be::grouped_gemm(false, false, count, rows.data(), N, K, 1.0f, pa.data(), K, pb.data(), N, 0.0f,
                     pc_ref.data(), N);
    be::register_weights(w.data(), int64_t(w.size()));
    const auto before = be::weight_cache_stats();
    for (int rep = 0; rep < 2; ++rep)
      be::grouped_gemm(false, false, count, rows.data(), N, K, 1.0f, pa.data(), K, pb.data(), N, 0.0f, pc.data(),
                       N);
    be::set_grouped_variant(be::GroupedVariant::automatic);
    const auto after = be::weight_cache_stats();
    int64_t nonempty = 0;
    for (int64_t r : rows) nonempty += r > 0;
    EXPECT_EQ(after.conversions - before.conversions, nonempty);
    // Each non-empty problem: once in preparation of rep 0 (a conversion), then
    // a hit in each loop body, plus a preparation hit in rep 1.
    EXPECT_EQ(after.hits - before.hits, 3 * nonempty);
    for (size_t i = 0; i < c.size(); ++i) ASSERT_EQ(c[i], c_ref[i]) << "mode " << int(mode) << " element " << i;
  }
}

// fp32 GEMMs never touch the cache.
TEST(weight_cache, fp32_gemms_do_not_use_it) {
  const int64_t M = 8, K = 16, N = 8;
  Buffer<float> w(size_t(K * N)), x(size_t(M * K)), y(size_t(M * N));
  fill(w.data(), K * N, 1);
  fill(x.data(), M * K, 2);
  be::set_precision(be::Precision::fp32);
  be::register_weights(w.data(), K * N);
  const auto before = be::weight_cache_stats();
  be::gemm(false, false, M, N, K, 1.0f, x.data(), K, w.data(), N, 0.0f, y.data(), N);
  const auto after = be::weight_cache_stats();
  be::clear_registered_weights();
  EXPECT_EQ(after.conversions, before.conversions);
  EXPECT_EQ(after.hits, before.hits);
}
