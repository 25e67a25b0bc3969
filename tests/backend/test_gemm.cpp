// GEMM engines (OpenBLAS fp32, oneDNN fp32, oneDNN bf16) and grouped GEMM
// variants against a naive double-precision reference.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cpu/gemm_internal.hpp"  // dnnl_cache_size
#include "finemoe/backend.hpp"
#include "finemoe/error.hpp"

namespace be = finemoe::backend;

namespace {

struct Mat {
  std::vector<float> v;
  int64_t rows, cols, ld;
  Mat(int64_t r, int64_t c, int64_t pad, uint32_t seed) : v(size_t(r * (c + pad))), rows(r), cols(c), ld(c + pad) {
    uint32_t s = seed;
    for (auto& x : v) {
      s = s * 1664525u + 1013904223u;
      x = float(int32_t(s >> 8) % 2000 - 1000) / 997.0f;
    }
  }
};

// C = alpha op(A) op(B) + beta C in double; also returns Σ|a||b| per element
// (the scale of rounding errors).
void ref_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const Mat& A, const Mat& B,
              double beta, const std::vector<float>& C0, int64_t ldc, std::vector<double>& C,
              std::vector<double>& absC) {
  C.assign(size_t(M * ldc), 0.0);
  absC.assign(size_t(M * ldc), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < K; ++k) {
        double a = ta ? A.v[k * A.ld + i] : A.v[i * A.ld + k];
        double b = tb ? B.v[j * B.ld + k] : B.v[k * B.ld + j];
        s += a * b;
        sa += std::fabs(a * b);
      }
      C[i * ldc + j] = alpha * s + beta * C0[i * ldc + j];
      absC[i * ldc + j] = std::fabs(alpha) * sa + std::fabs(beta * C0[i * ldc + j]);
    }
}

// Max over elements of |C - ref| / (Σ|a||b| scale); also checks the padding
// columns of C were not touched.
double check(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  const int64_t pad = 3;
  Mat A = ta ? Mat(K, M, pad, 1) : Mat(M, K, pad, 1);
  Mat B = tb ? Mat(N, K, pad + 2, 2) : Mat(K, N, pad + 2, 2);
  const int64_t ldc = N + 5;
  Mat C(M, N, 5, 3);
  std::vector<float> C0 = C.v;
  std::vector<double> ref, absref;
  ref_gemm(ta, tb, M, N, K, alpha, A, B, beta, C0, ldc, ref, absref);
  be::gemm(ta, tb, M, N, K, alpha, A.v.data(), A.ld, B.v.data(), B.ld, beta, C.v.data(), ldc);
  double worst = 0;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j)
      worst = std::max(worst, std::fabs(C.v[i * ldc + j] - ref[i * ldc + j]) / (absref[i * ldc + j] + 1e-30));
    for (int64_t j = N; j < ldc; ++j) EXPECT_EQ(C.v[i * ldc + j], C0[i * ldc + j]) << "padding written";
  }
  return worst;
}

struct EngineScope {
  be::Precision p = be::precision();
  be::Fp32Engine e = be::fp32_engine();
  be::GroupedVariant g = be::grouped_variant();
  ~EngineScope() {
    be::set_precision(p);
    be::set_fp32_engine(e);
    be::set_grouped_variant(g);
  }
};

}  // namespace

// fp32 rounding: relative to Σ|a||b|, K=53 terms stay far below 1e-5.
constexpr double kFp32Tol = 1e-5;
// bf16 inputs: each of a, b is rounded to 8 significant bits (relative error
// <= 2^-9), so each product is within ~2^-8 of exact and the sum within
// 2^-8·Σ|a||b| (+ fp32 accumulation). We allow 2^-7·Σ|a||b|.
constexpr double kBf16Tol = 1.0 / 128;

TEST(gemm, fp32_openblas_all_trans_odd_sizes_alpha_beta) {
  EngineScope s;
  be::set_precision(be::Precision::fp32);
  be::set_fp32_engine(be::Fp32Engine::openblas);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      EXPECT_LT(check(ta, tb, 37, 29, 53, 0.7f, 0.3f), kFp32Tol) << ta << tb;
      EXPECT_LT(check(ta, tb, 1, 17, 5, 1.0f, 0.0f), kFp32Tol) << ta << tb;
      EXPECT_LT(check(ta, tb, 65, 1, 130, -2.0f, 1.0f), kFp32Tol) << ta << tb;
    }
}

TEST(gemm, fp32_onednn_all_trans_odd_sizes_alpha_beta) {
  std::string why;
  if (!be::bf16_available(&why) && be::cpu_isa() == "none") GTEST_SKIP() << "no oneDNN";
  EngineScope s;
  be::set_precision(be::Precision::fp32);
  be::set_fp32_engine(be::Fp32Engine::onednn);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      EXPECT_LT(check(ta, tb, 37, 29, 53, 0.7f, 0.3f), kFp32Tol) << ta << tb;
      EXPECT_LT(check(ta, tb, 65, 1, 130, -2.0f, 1.0f), kFp32Tol) << ta << tb;
    }
}

TEST(gemm, bf16_agrees_with_reference_within_bf16_tolerance) {
  std::string why;
  if (!be::bf16_available(&why)) GTEST_SKIP() << why;
  EngineScope s;
  be::set_precision(be::Precision::bf16);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      double err = check(ta, tb, 37, 29, 53, 0.7f, 0.3f);
      EXPECT_LT(err, kBf16Tol) << ta << tb;
      // ... and really is bf16: rounding the inputs leaves a visible error.
      EXPECT_GT(err, 1e-5) << "bf16 path looks like fp32";
      EXPECT_LT(check(ta, tb, 64, 256, 64, 1.0f, 1.0f), kBf16Tol);
    }
}

TEST(gemm, k_zero_scales_c_by_beta) {
  EngineScope s;
  for (auto e : {be::Fp32Engine::openblas, be::Fp32Engine::onednn}) {
    if (e == be::Fp32Engine::onednn && be::cpu_isa() == "none") continue;
    be::set_fp32_engine(e);
    std::vector<float> C = {1, 2, 3, 4};
    float dummy = 0;
    be::gemm(false, false, 2, 2, 0, 1.0f, &dummy, 1, &dummy, 2, 0.5f, C.data(), 2);
    EXPECT_EQ(C, (std::vector<float>{0.5f, 1, 1.5f, 2}));
  }
}

namespace {
void check_grouped(be::Precision p, be::GroupedVariant v, be::Fp32Engine e, bool ta, bool tb, double tol) {
  EngineScope s;
  be::set_precision(p);
  be::set_fp32_engine(e);
  be::set_grouped_variant(v);
  const int64_t N = 24, K = 40, count = 9;
  const std::vector<int64_t> M = {5, 0, 17, 0, 0, 33, 1, 64, 0};  // zero-row experts included
  std::vector<Mat> As, Bs, Cs;
  for (int64_t g = 0; g < count; ++g) {
    // Shared leading dims across groups (as the experts' packed buffers have).
    As.push_back(ta ? Mat(K, M[g], 64 - M[g] + 1, 10 + g) : Mat(M[g], K, 2, 10 + g));
    Bs.push_back(tb ? Mat(N, K, 1, 20 + g) : Mat(K, N, 1, 20 + g));
    Cs.push_back(Mat(M[g], N, 4, 30 + g));
  }
  const int64_t lda = As[0].ld, ldb = Bs[0].ld, ldc = Cs[0].ld;
  std::vector<std::vector<float>> C0;
  std::vector<const float*> pa, pb;
  std::vector<float*> pc;
  for (int64_t g = 0; g < count; ++g) {
    C0.push_back(Cs[g].v);
    pa.push_back(As[g].v.data());
    pb.push_back(Bs[g].v.data());
    pc.push_back(Cs[g].v.data());
  }
  be::grouped_gemm(ta, tb, count, M.data(), N, K, 0.5f, pa.data(), lda, pb.data(), ldb, 1.0f, pc.data(), ldc);
  for (int64_t g = 0; g < count; ++g) {
    std::vector<double> ref, absref;
    ref_gemm(ta, tb, M[g], N, K, 0.5, As[g], Bs[g], 1.0, C0[g], ldc, ref, absref);
    for (int64_t i = 0; i < M[g]; ++i)
      for (int64_t j = 0; j < N; ++j)
        ASSERT_LT(std::fabs(Cs[g].v[i * ldc + j] - ref[i * ldc + j]), tol * (absref[i * ldc + j] + 1e-30))
            << "group " << g << " row " << i << " col " << j;
  }
}
}  // namespace

TEST(grouped_gemm, fp32_openblas_serial_and_omp_loop_with_empty_groups) {
  for (auto v : {be::GroupedVariant::serial, be::GroupedVariant::omp_loop, be::GroupedVariant::automatic})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) check_grouped(be::Precision::fp32, v, be::Fp32Engine::openblas, ta, tb, kFp32Tol);
}

// One thread pool: with the OpenMP build of OpenBLAS (what CMake links when it
// finds it), openblas_set_num_threads(1) would also shrink OpenMP's team; the
// grouped loop must still run on every thread, and the executables must load
// that build (their RUNPATH), not the system's pthread one.
TEST(grouped_gemm, fp32_openblas_omp_loop_runs_on_the_whole_team) {
#ifdef FINEMOE_EXPECT_BLAS_OPENMP
  EXPECT_EQ(be::blas_threading(), "openmp") << "built against the OpenMP OpenBLAS, but another one was loaded";
#endif
  const int saved = omp_get_max_threads();
  be::set_num_threads(2);
  check_grouped(be::Precision::fp32, be::GroupedVariant::omp_loop, be::Fp32Engine::openblas, false, false, kFp32Tol);
  EXPECT_EQ(be::last_grouped_team_size(), 2) << "BLAS threading: " << be::blas_threading();
  EXPECT_EQ(omp_get_max_threads(), 2);
  check_grouped(be::Precision::fp32, be::GroupedVariant::omp_loop, be::Fp32Engine::openblas, true, false, kFp32Tol);
  EXPECT_EQ(be::last_grouped_team_size(), 2);
  be::set_num_threads(saved);
}

TEST(grouped_gemm, fp32_onednn_omp_loop_with_empty_groups) {
  if (be::cpu_isa() == "none") GTEST_SKIP() << "no oneDNN";
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      check_grouped(be::Precision::fp32, be::GroupedVariant::omp_loop, be::Fp32Engine::onednn, ta, tb, kFp32Tol);
}

// Equal row counts at constant strides: the batched variant runs them as one
// oneDNN batched matmul (bf16 and oneDNN fp32); it must agree with the
// reference and be bit-identical to the per-problem loop. Unequal row counts
// (check_grouped's) fall back to the loop.
TEST(grouped_gemm, batched_variant_equal_problems_and_fallback) {
  if (be::cpu_isa() == "none") GTEST_SKIP() << "no oneDNN";
  std::vector<std::pair<be::Precision, be::Fp32Engine>> engines{{be::Precision::fp32, be::Fp32Engine::onednn}};
  if (be::bf16_available()) engines.push_back({be::Precision::bf16, be::Fp32Engine::openblas});
  for (auto [p, e] : engines) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) check_grouped(p, be::GroupedVariant::batched, e, ta, tb, p == be::Precision::bf16 ? kBf16Tol : kFp32Tol);
    EngineScope s;
    be::set_precision(p);
    be::set_fp32_engine(e);
    const int64_t count = 12, M = 16, N = 24, K = 40;
    Mat A(count * K, M, 0, 1), B(count * K, N, 0, 2), C0(count * M, N, 0, 3);  // A stored transposed per problem
    for (float beta : {0.0f, 1.0f}) {
      std::vector<float> loop(C0.v), batched(C0.v);
      std::vector<int64_t> rows(count, M);
      std::vector<const float*> pa(count), pb(count);
      std::vector<float*> pl(count), pbt(count);
      for (int64_t g = 0; g < count; ++g) {
        pa[g] = A.v.data() + g * K * M;
        pb[g] = B.v.data() + g * K * N;
        pl[g] = loop.data() + g * M * N;
        pbt[g] = batched.data() + g * M * N;
      }
      be::set_grouped_variant(be::GroupedVariant::omp_loop);
      be::grouped_gemm(true, false, count, rows.data(), N, K, 1.0f, pa.data(), M, pb.data(), N, beta, pl.data(), N);
      be::set_grouped_variant(be::GroupedVariant::batched);
      be::grouped_gemm(true, false, count, rows.data(), N, K, 1.0f, pa.data(), M, pb.data(), N, beta, pbt.data(), N,
                       be::Epilogue::none);
      for (size_t i = 0; i < loop.size(); ++i)
        ASSERT_EQ(batched[i], loop[i]) << "precision " << int(p) << " beta " << beta << " at " << i;
      // ... and with the ReLU epilogue (a post-op of the batched primitive)
      std::vector<float> loop_relu(C0.v), batched_relu(C0.v);
      for (int64_t g = 0; g < count; ++g) {
        pl[g] = loop_relu.data() + g * M * N;
        pbt[g] = batched_relu.data() + g * M * N;
      }
      be::set_grouped_variant(be::GroupedVariant::omp_loop);
      be::grouped_gemm(true, false, count, rows.data(), N, K, 1.0f, pa.data(), M, pb.data(), N, beta, pl.data(), N,
                       be::Epilogue::relu);
      be::set_grouped_variant(be::GroupedVariant::batched);
      be::grouped_gemm(true, false, count, rows.data(), N, K, 1.0f, pa.data(), M, pb.data(), N, beta, pbt.data(), N,
                       be::Epilogue::relu);
      for (size_t i = 0; i < loop.size(); ++i) {
        ASSERT_EQ(batched_relu[i], loop_relu[i]) << "relu, precision " << int(p) << " beta " << beta << " at " << i;
        ASSERT_EQ(batched_relu[i], loop[i] > 0.0f ? loop[i] : 0.0f) << "relu at " << i;
      }
      for (int64_t g = 0; g < count; ++g) {
        std::vector<double> ref, absref;
        std::vector<float> c0g(C0.v.begin() + g * M * N, C0.v.begin() + (g + 1) * M * N);
        Mat Ag(K, M, 0, 0), Bg(K, N, 0, 0);
        std::copy(A.v.begin() + g * K * M, A.v.begin() + (g + 1) * K * M, Ag.v.begin());
        std::copy(B.v.begin() + g * K * N, B.v.begin() + (g + 1) * K * N, Bg.v.begin());
        ref_gemm(true, false, M, N, K, 1.0, Ag, Bg, beta, c0g, N, ref, absref);
        const double tol = p == be::Precision::bf16 ? kBf16Tol : kFp32Tol;
        for (int64_t i = 0; i < M * N; ++i)
          ASSERT_LT(std::fabs(batched[g * M * N + i] - ref[i]), tol * (absref[i] + 1e-30)) << "problem " << g;
      }
    }
  }
}

TEST(grouped_gemm, bf16_omp_loop_and_serial_with_empty_groups) {
  std::string why;
  if (!be::bf16_available(&why)) GTEST_SKIP() << why;
  for (auto v : {be::GroupedVariant::serial, be::GroupedVariant::omp_loop})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) check_grouped(be::Precision::bf16, v, be::Fp32Engine::openblas, ta, tb, kBf16Tol);
}

TEST(precision, resolve_explicit_and_bad_values) {
  std::string why;
  EXPECT_EQ(be::resolve_precision(finemoe::PrecisionChoice::fp32, &why), be::Precision::fp32);
  EXPECT_EQ(why, "fp32 requested");
  // Other names never reach the backend: config parsing refuses them
  // (core.Config.EnumKeysRoundTripAndRefuseOtherNames).
}

TEST(precision, auto_explains_its_choice) {
  std::string why;
  be::Precision p = be::resolve_precision(finemoe::PrecisionChoice::automatic, &why, be::model_gemm_shapes(64, 256, 64));
  EXPECT_EQ(why.rfind("auto: ", 0), 0u) << why;
  if (p == be::Precision::bf16)
    EXPECT_NE(why.find("bf16"), std::string::npos);
  else
    EXPECT_NE(why.find("fp32"), std::string::npos);
  if (!be::bf16_available()) EXPECT_EQ(p, be::Precision::fp32);
  if (be::has_amx()) EXPECT_EQ(p, be::Precision::bf16);
}

// ---- train.fp32_engine -------------------------------------------------------
namespace {
// The "N.NNx" after "measured " in a reason, or -1.
double measured_ratio(const std::string& why) {
  const size_t at = why.find(" measured ");
  if (at == std::string::npos) return -1;
  char* end = nullptr;
  const double x = std::strtod(why.c_str() + at + 10, &end);
  return end && *end == 'x' ? x : -1;
}
}  // namespace

TEST(fp32_engine, names_round_trip_and_bad_names_name_the_key) {
  for (auto e : {be::Fp32Engine::openblas, be::Fp32Engine::onednn})
    EXPECT_EQ(be::fp32_engine_from_name(be::fp32_engine_name(e)), e);
  EXPECT_EQ(be::fp32_engine_name(be::Fp32Engine::openblas), "openblas");
  EXPECT_EQ(be::fp32_engine_name(be::Fp32Engine::onednn), "onednn");
  EXPECT_EQ(be::precision_name(be::Precision::fp32), "fp32");
  EXPECT_EQ(be::precision_name(be::Precision::bf16), "bf16");
  try {
    be::fp32_engine_from_name("auto");  // must be resolved first
    FAIL() << "auto is not an engine";
  } catch (const finemoe::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'train.fp32_engine'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'auto'"), std::string::npos) << e.what();
  }
}

TEST(fp32_engine, explicit_requests_are_kept) {
  EngineScope scope;
  be::set_precision(be::Precision::fp32);
  be::set_fp32_engine(be::Fp32Engine::openblas);
  const auto shapes = be::model_gemm_shapes(64, 256, 64);
  std::string why;
  EXPECT_EQ(be::resolve_fp32_engine(finemoe::Fp32EngineChoice::openblas, &why, shapes), be::Fp32Engine::openblas);
  EXPECT_EQ(why, "openblas requested");
  if (be::onednn_built()) {
    EXPECT_EQ(be::resolve_fp32_engine(finemoe::Fp32EngineChoice::onednn, &why, shapes), be::Fp32Engine::onednn);
    EXPECT_EQ(why, "onednn requested (oneDNN ISA " + be::cpu_isa() + ")");
  } else {
    try {
      be::resolve_fp32_engine(finemoe::Fp32EngineChoice::onednn, &why, shapes);
      FAIL() << "onednn without oneDNN must be an error";
    } catch (const finemoe::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("'train.fp32_engine'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("no oneDNN"), std::string::npos) << e.what();
    }
  }
  // Resolving changes nothing: the caller sets the engine.
  EXPECT_EQ(be::fp32_engine(), be::Fp32Engine::openblas);
}

// auto times both engines at the shapes and says what it measured; the
// choice follows the printed ratio (oneDNN only above 1.05x). It leaves the
// precision, engine and thread count as they were, and no oneDNN primitive
// created on its one thread behind (the run's GEMMs on more threads must not
// reuse them: they would compute differently from a run that never measured).
TEST(fp32_engine, auto_measures_both_engines_and_names_the_ratio) {
  EngineScope scope;
  be::set_precision(be::Precision::fp32);
  be::set_fp32_engine(be::Fp32Engine::openblas);
  const int threads = be::num_threads();
  std::string why;
  const be::Fp32Engine e = be::resolve_fp32_engine(finemoe::Fp32EngineChoice::automatic, &why, be::model_gemm_shapes(64, 256, 128));
  EXPECT_EQ(be::fp32_engine(), be::Fp32Engine::openblas);
  EXPECT_EQ(be::precision(), be::Precision::fp32);
  EXPECT_EQ(be::num_threads(), threads);
  // The measurement dropped the cache (it did create primitives: oneDNN was timed).
  EXPECT_EQ(finemoe::backend::detail::dnnl_cache_size(), 0);
  if (!be::onednn_built()) {
    EXPECT_EQ(e, be::Fp32Engine::openblas);
    EXPECT_EQ(why, "auto: openblas, because this build has no oneDNN");
    return;
  }
  const std::string picked = be::fp32_engine_name(e);
  EXPECT_EQ(why.rfind("auto: " + picked + ", oneDNN (" + be::cpu_isa() + ") measured ", 0), 0u) << why;
  EXPECT_NE(why.find("x OpenBLAS's speed at this model's GEMM shapes"), std::string::npos) << why;
  const double ratio = measured_ratio(why);
  ASSERT_GT(ratio, 0.0) << why;
  if (e == be::Fp32Engine::onednn)
    EXPECT_GE(ratio, 1.05) << why;
  else
    EXPECT_LE(ratio, 1.05) << why;
}

// With bf16 every GEMM but gemm_fp32 (OpenBLAS, always) runs on oneDNN: auto
// measures nothing and keeps OpenBLAS, saying why; explicit requests stand.
TEST(fp32_engine, bf16_precision_makes_the_engine_irrelevant) {
  const auto shapes = be::model_gemm_shapes(64, 256, 64);
  std::string why;
  EXPECT_EQ(be::resolve_fp32_engine(finemoe::Fp32EngineChoice::automatic, &why, shapes, be::Precision::bf16), be::Fp32Engine::openblas);
  EXPECT_EQ(why.rfind("auto: openblas; the precision is bf16", 0), 0u) << why;
  EXPECT_NE(why.find("does not matter"), std::string::npos) << why;
  EXPECT_EQ(measured_ratio(why), -1) << why;
  EXPECT_EQ(be::resolve_fp32_engine(finemoe::Fp32EngineChoice::openblas, &why, shapes, be::Precision::bf16), be::Fp32Engine::openblas);
  EXPECT_EQ(why.rfind("openblas requested (unused", 0), 0u) << why;
  if (be::onednn_built()) {
    EXPECT_EQ(be::resolve_fp32_engine(finemoe::Fp32EngineChoice::onednn, &why, shapes, be::Precision::bf16), be::Fp32Engine::onednn);
    EXPECT_NE(why.find("unused"), std::string::npos) << why;
  }
}

TEST(precision, engine_description_names_engine_and_isa) {
  EngineScope s;
  be::set_precision(be::Precision::fp32);
  be::set_fp32_engine(be::Fp32Engine::openblas);
  EXPECT_NE(be::engine_description().find("OpenBLAS"), std::string::npos);
  EXPECT_EQ(be::engine_description().find("oneDNN"), std::string::npos);
  EXPECT_NE(be::engine_description().find("grouped: "), std::string::npos);
  if (be::cpu_isa() != "none") {
    be::set_fp32_engine(be::Fp32Engine::onednn);
    const std::string d = be::engine_description();
    EXPECT_EQ(d.rfind("oneDNN matmul, " + be::cpu_isa() + " (fp32)", 0), 0u) << d;
    EXPECT_EQ(d.find("OpenBLAS"), std::string::npos) << d;
  }
  if (be::bf16_available()) {
    be::set_precision(be::Precision::bf16);
    std::string d = be::engine_description();
    EXPECT_NE(d.find("oneDNN"), std::string::npos) << d;
    EXPECT_NE(d.find(be::cpu_isa()), std::string::npos) << d;
    EXPECT_NE(d.find("bf16"), std::string::npos) << d;
  }
}

// Epilogue::relu (fused in oneDNN as a post-op, applied per problem after
// OpenBLAS) gives exactly max(gemm, 0), also with beta != 0 (relu after the sum).
TEST(gemm, relu_epilogue_is_max_of_the_product_and_zero) {
  struct Engine {
    be::Precision p;
    be::Fp32Engine e;
    const char* name;
  };
  std::vector<Engine> engines{{be::Precision::fp32, be::Fp32Engine::openblas, "fp32 openblas"}};
  if (be::cpu_isa() != "none") engines.push_back({be::Precision::fp32, be::Fp32Engine::onednn, "fp32 onednn"});
  if (be::bf16_available()) engines.push_back({be::Precision::bf16, be::Fp32Engine::openblas, "bf16"});
  const int64_t M = 45, N = 70, K = 33, count = 6;
  Mat A(count * M, K, 0, 21), B(count * K, N, 0, 22), C0(count * M, N, 0, 23);
  for (const auto& eng : engines) {
    be::set_precision(eng.p);
    be::set_fp32_engine(eng.e);
    for (float beta : {0.0f, 0.5f}) {
      std::vector<float> ref(C0.v), got(C0.v);
      be::gemm(false, false, M, N, K, 1.0f, A.v.data(), K, B.v.data(), N, beta, ref.data(), N);
      for (int64_t i = 0; i < M * N; ++i) ref[i] = ref[i] > 0.0f ? ref[i] : 0.0f;
      be::gemm(false, false, M, N, K, 1.0f, A.v.data(), K, B.v.data(), N, beta, got.data(), N, be::Epilogue::relu);
      for (int64_t i = 0; i < M * N; ++i) ASSERT_EQ(got[i], ref[i]) << eng.name << " beta " << beta << " i " << i;
      // grouped, both variants, one empty problem
      for (auto v : {be::GroupedVariant::serial, be::GroupedVariant::omp_loop}) {
        be::set_grouped_variant(v);
        std::vector<float> gref(C0.v), ggot(C0.v);
        std::vector<int64_t> rows(count, M);
        rows[2] = 0;
        std::vector<const float*> pa(count), pb(count);
        std::vector<float*> pr(count), pg(count);
        for (int64_t g = 0; g < count; ++g) {
          pa[g] = A.v.data() + g * M * K;
          pb[g] = B.v.data() + g * K * N;
          pr[g] = gref.data() + g * M * N;
          pg[g] = ggot.data() + g * M * N;
        }
        be::grouped_gemm(false, false, count, rows.data(), N, K, 1.0f, pa.data(), K, pb.data(), N, beta, pr.data(),
                         N);
        for (int64_t g = 0; g < count; ++g)
          for (int64_t i = 0; i < rows[g] * N; ++i) pr[g][i] = pr[g][i] > 0.0f ? pr[g][i] : 0.0f;
        be::grouped_gemm(false, false, count, rows.data(), N, K, 1.0f, pa.data(), K, pb.data(), N, beta, pg.data(),
                         N, be::Epilogue::relu);
        for (size_t i = 0; i < ggot.size(); ++i)
          ASSERT_EQ(ggot[i], gref[i]) << eng.name << " grouped variant " << int(v) << " beta " << beta << " i " << i;
      }
      be::set_grouped_variant(be::GroupedVariant::automatic);
    }
  }
  be::set_precision(be::Precision::fp32);
  be::set_fp32_engine(be::Fp32Engine::openblas);
}
