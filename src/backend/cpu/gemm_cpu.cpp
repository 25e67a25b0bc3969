// CPU GEMM backend: which engine runs a GEMM, and how grouped GEMMs are spread
// over the cores.
//
//   fp32: OpenBLAS sgemm (the backend's default: deterministic across thread
//         counts and allocation-free) or oneDNN fp32 matmul (onednn);
//         train.fp32_engine auto picks one by measurement at start-up
//         (resolve_fp32_engine); see backend.hpp and docs/performance.md.
//   bf16: oneDNN matmul, bf16 inputs, fp32 accumulate/output (gemm_dnnl.cpp).
//
// Threading rule (no oversubscription): one pool for OpenMP and OpenBLAS.
// The build links the OpenMP build of OpenBLAS when it exists (CMakeLists.txt):
// BLAS then runs on libgomp's team, follows omp_set_num_threads, and runs on
// one thread by itself inside a parallel region. With the pthread build (the
// fallback) the two pools are separate, so grouped_gemm's OpenMP loop pins
// OpenBLAS to one thread for its duration; with the OpenMP build it must NOT,
// because there openblas_set_num_threads(1) also sets OpenMP's team to one
// thread. oneDNN runs single-threaded by itself inside a parallel region.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "backend/cpu/gemm_internal.hpp"
#include "finemoe/backend.hpp"
#include "finemoe/error.hpp"
#include "finemoe/memory.hpp"
#include "finemoe/profile.hpp"

namespace finemoe::backend {
namespace {
std::atomic<Precision> g_precision{Precision::fp32};
std::atomic<Fp32Engine> g_fp32_engine{Fp32Engine::openblas};
std::atomic<GroupedVariant> g_grouped{GroupedVariant::automatic};
std::atomic<int> g_last_team{0};

bool use_dnnl() { return g_precision == Precision::bf16 || g_fp32_engine == Fp32Engine::onednn; }
bool is_bf16() { return g_precision == Precision::bf16; }

void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP.
bool blas_on_openmp() { return openblas_get_parallel() == 2; }

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) return;
  omp_set_num_threads(n);
  if (!blas_on_openmp()) openblas_set_num_threads(n);  // the OpenMP build follows OpenMP's count
}
int num_threads() { return omp_get_max_threads(); }

void set_fp32_engine(Fp32Engine e) {
  if (e == Fp32Engine::onednn && !detail::dnnl_built())
    throw Error("fp32 engine 'onednn' requested but this build has no oneDNN");
  g_fp32_engine = e;
}
Fp32Engine fp32_engine() { return g_fp32_engine; }
std::string precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }
std::string fp32_engine_name(Fp32Engine e) { return e == Fp32Engine::onednn ? "onednn" : "openblas"; }
Fp32Engine fp32_engine_from_name(const std::string& name, const std::string& key) {
  if (name == "openblas") return Fp32Engine::openblas;
  if (name == "onednn") return Fp32Engine::onednn;
  throw ConfigError("config key '" + key + "': expected openblas | onednn, got '" + name + "'");
}
bool onednn_built() { return detail::dnnl_built(); }
void set_grouped_variant(GroupedVariant v) { g_grouped = v; }
GroupedVariant grouped_variant() { return g_grouped; }

std::string cpu_isa() { return detail::dnnl_isa_name(); }
std::string blas_threading() {
  switch (openblas_get_parallel()) {
    case 0: return "serial";
    case 1: return "pthread";
    case 2: return "openmp";
    default: return "unknown";
  }
}
int last_grouped_team_size() { return g_last_team; }
bool has_amx() { return detail::dnnl_amx(); }

bool bf16_available(std::string* why) {
  if (!detail::dnnl_built()) {
    if (why) *why = "this build has no oneDNN (libdnnl-dev), which runs the bf16 GEMMs";
    return false;
  }
  if (!detail::dnnl_native_bf16()) {
    if (why)
      *why = "oneDNN's effective CPU ISA is " + detail::dnnl_isa_name() +
             " (no native bf16 dot product; ONEDNN_MAX_CPU_ISA may cap it)";
    return false;
  }
  if (why) *why = "oneDNN ISA " + detail::dnnl_isa_name() + " has native bf16";
  return true;
}

void set_precision(Precision p) {
  if (p == Precision::bf16) {
    std::string why;
    if (!bf16_available(&why)) throw Error("bf16 GEMM is not available: " + why);
  }
  g_precision = p;
}
Precision precision() { return g_precision; }

std::string engine_description() {
  std::string grouped = g_grouped == GroupedVariant::serial     ? "serial"
                        : g_grouped == GroupedVariant::batched  ? "batched oneDNN matmul where shapes allow, else OpenMP loop"
                                                                : "OpenMP loop of 1-thread GEMMs";
  if (is_bf16())
    return "oneDNN matmul, " + detail::dnnl_isa_name() + " (bf16 inputs, fp32 accumulate); grouped: " + grouped;
  if (g_fp32_engine == Fp32Engine::onednn)
    return "oneDNN matmul, " + detail::dnnl_isa_name() + " (fp32); grouped: " + grouped;
  return std::string("OpenBLAS sgemm (fp32; ") + openblas_get_config() + "); grouped: " + grouped;
}

namespace {
// C = beta·C (a product with K = 0; beta 0 also clears NaNs, as in BLAS).
void scale_block(float* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

// C = max(C, 0) on an M x N block (the unfused epilogue).
void relu_block(float* C, int64_t M, int64_t N, int64_t ldc) {
  const bool par = M * N >= (1 << 16) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (par)
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
#pragma omp simd
    for (int64_t j = 0; j < N; ++j) c[j] = c[j] > 0.0f ? c[j] : 0.0f;
  }
}

void gemm_impl(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc, Epilogue ep) {
  if (M == 0 || N == 0) return;
  const bool relu = ep == Epilogue::relu;
  if (K == 0) {  // C = beta·C (BLAS semantics; oneDNN rejects K = 0)
    scale_block(C, M, N, ldc, beta);
    if (relu) relu_block(C, M, N, ldc);
    return;
  }
  if (use_dnnl()) {
    detail::dnnl_gemm(is_bf16(), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, relu);
  } else {
    blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (relu) relu_block(C, M, N, ldc);
  }
}
}  // namespace

namespace {
std::atomic<int64_t> g_gemm_calls{0};
}  // namespace
int64_t gemm_calls() { return g_gemm_calls.load(std::memory_order_relaxed); }

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, Epilogue ep) {
  g_gemm_calls.fetch_add(1, std::memory_order_relaxed);
  if (M == 0 || N == 0) return;
  FINEMOE_PROFILE("gemm");
  gemm_impl(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep);
}

void gemm_fp32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  g_gemm_calls.fetch_add(1, std::memory_order_relaxed);
  if (M == 0 || N == 0) return;
  FINEMOE_PROFILE("gemm");
  if (K == 0) return scale_block(C, M, N, ldc, beta);
  blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);  // always fp32
}

namespace {
// Every problem has the same M > 0 and A, B, C advance by constant strides
// (in floats, >= 0): the problems form one batched matmul.
bool uniform_strides(int64_t count, const int64_t* M, const float* const* A, const float* const* B,
                     float* const* C, int64_t* sa, int64_t* sb, int64_t* sc) {
  if (M[0] <= 0) return false;
  *sa = A[1] - A[0];
  *sb = B[1] - B[0];
  *sc = C[1] - C[0];
  if (*sa < 0 || *sb < 0 || *sc <= 0) return false;
  for (int64_t g = 1; g < count; ++g)
    if (M[g] != M[0] || A[g] - A[g - 1] != *sa || B[g] - B[g - 1] != *sb || C[g] - C[g - 1] != *sc) return false;
  return true;
}
}  // namespace

void grouped_gemm(bool ta, bool tb, int64_t count, const int64_t* M, int64_t N, int64_t K, float alpha,
                  const float* const* A, int64_t lda, const float* const* B, int64_t ldb, float beta,
                  float* const* C, int64_t ldc, Epilogue ep) {
  g_gemm_calls.fetch_add(1, std::memory_order_relaxed);
  if (count <= 0 || N == 0) return;
  FINEMOE_PROFILE("grouped_gemm");
  const bool relu = ep == Epilogue::relu;
  const int nthr = omp_get_max_threads();
  const bool dnnl = use_dnnl();
  GroupedVariant v = g_grouped;
  if (v == GroupedVariant::batched && dnnl && K > 0 && count >= 2 && !omp_in_parallel()) {
    int64_t sa = 0, sb = 0, sc = 0;
    if (uniform_strides(count, M, A, B, C, &sa, &sb, &sc)) {
      detail::dnnl_batched_gemm(is_bf16(), ta, tb, count, M[0], N, K, alpha, A[0], sa, lda, B[0], sb, ldb, beta, C[0],
                                sc, ldc, relu);
      return;
    }
  }
  if (v == GroupedVariant::automatic || v == GroupedVariant::batched)
    v = (count >= 2 * nthr && nthr > 1 && !omp_in_parallel()) ? GroupedVariant::omp_loop : GroupedVariant::serial;
  if (v == GroupedVariant::serial || K == 0) {
    for (int64_t g = 0; g < count; ++g) {
      if (dnnl && K > 0 && M[g] > 0)
        detail::dnnl_gemm(is_bf16(), ta, tb, M[g], N, K, alpha, A[g], lda, B[g], ldb, beta, C[g], ldc, relu);
      else
        gemm_impl(ta, tb, M[g], N, K, alpha, A[g], lda, B[g], ldb, beta, C[g], ldc, ep);
    }
    return;
  }
  if (dnnl) {
    // Create every primitive serially first: the loop below then only looks
    // them up, and creation (JIT) never happens once per thread.
    for (int64_t g = 0; g < count; ++g)
      detail::dnnl_prepare(is_bf16(), ta, tb, M[g], N, K, alpha, B[g], lda, ldb, beta, ldc, relu);
  }
  const bool pin_blas = !dnnl && !blas_on_openmp();  // see the threading rule at the top
  const int blas_threads = openblas_get_num_threads();
  if (pin_blas) openblas_set_num_threads(1);
  // Dynamic schedule: expert sizes differ (token choice, empty experts).
#pragma omp parallel
  {
#pragma omp single nowait
    g_last_team = omp_get_num_threads();
#pragma omp for schedule(dynamic, 1)
  for (int64_t g = 0; g < count; ++g) {
    if (M[g] == 0) continue;
    if (dnnl) {
      detail::dnnl_gemm(is_bf16(), ta, tb, M[g], N, K, alpha, A[g], lda, B[g], ldb, beta, C[g], ldc, relu);
    } else {
      blas_gemm(ta, tb, M[g], N, K, alpha, A[g], lda, B[g], ldb, beta, C[g], ldc);
      if (relu) relu_block(C[g], M[g], N, ldc);  // while this problem's C is in cache
    }
  }
  }
  if (pin_blas) openblas_set_num_threads(blas_threads);
}

void set_weight_cache_mode(WeightCacheMode m) { detail::dnnl_set_weight_cache_mode(m); }
WeightCacheMode weight_cache_mode() { return detail::dnnl_weight_cache_mode(); }
void register_weights(const float* base, int64_t count) { detail::dnnl_register_weights(base, count); }
void clear_registered_weights() { detail::dnnl_clear_weights(); }
void weights_updated() { detail::dnnl_weights_updated(); }
WeightCacheStats weight_cache_stats() { return detail::dnnl_weight_cache_stats(); }
RegisteredWeights::RegisteredWeights(std::initializer_list<std::pair<const float*, int64_t>> ranges) {
  for (const auto& r : ranges) register_weights(r.first, r.second);
}
RegisteredWeights::~RegisteredWeights() { clear_registered_weights(); }

// ---- measurement ------------------------------------------------------------
namespace {
void fill(Buffer<float>& b, float scale) {
  for (size_t i = 0; i < b.size(); ++i) b[i] = scale * float(int64_t((i * 2654435761u) % 2001) - 1000) / 1000.0f;
}
// Runs f repeatedly for about min_seconds (at least 3 times); best time per
// call. With one thread the time is the thread's CPU time, which other
// processes on a shared machine do not inflate; with more threads it is wall
// time (spinning threads would make CPU time meaningless).
template <typename F>
double best_time(F&& f, double min_seconds) {
  f();  // warm-up: primitive creation, page faults, thread start
  const bool cpu = omp_get_max_threads() == 1;
  double best = 1e30, t_end = now_s() + min_seconds;
  for (int rep = 0; rep < 3 || now_s() < t_end; ++rep) {
    double t0 = cpu ? thread_cpu_s() : now_s();
    f();
    best = std::min(best, (cpu ? thread_cpu_s() : now_s()) - t0);
    if (rep > 10000) break;
  }
  return best;
}
struct PrecisionScope {  // temporarily switch precision
  Precision saved;
  explicit PrecisionScope(Precision p) : saved(g_precision) { set_precision(p); }
  ~PrecisionScope() { g_precision = saved; }
};
}  // namespace

double measure_gemm_gflops(Precision p, const GemmShape& s, double min_seconds) {
  PrecisionScope scope(p);
  const int64_t lda = s.trans_a ? s.M : s.K, ldb = s.trans_b ? s.K : s.N;
  Buffer<float> A(size_t(s.M * s.K)), B(size_t(s.K * s.N)), C(size_t(s.M * s.N));
  fill(A, 1.0f);
  fill(B, 0.5f);
  double t = best_time([&] { gemm(s.trans_a, s.trans_b, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f,
                                  C.data(), s.N); },
                       min_seconds);
  return 2.0 * double(s.M) * double(s.N) * double(s.K) / t * 1e-9;
}

double measure_grouped_gflops(Precision p, int64_t count, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                              double min_seconds) {
  PrecisionScope scope(p);
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  Buffer<float> A(size_t(count * M * K)), B(size_t(count * K * N)), C(size_t(count * M * N));
  fill(A, 1.0f);
  fill(B, 0.5f);
  std::vector<const float*> pa(count), pb(count);
  std::vector<float*> pc(count);
  std::vector<int64_t> ms(count, M);
  for (int64_t g = 0; g < count; ++g) {
    pa[g] = A.data() + g * M * K;
    pb[g] = B.data() + g * K * N;
    pc[g] = C.data() + g * M * N;
  }
  double t = best_time([&] { grouped_gemm(ta, tb, count, ms.data(), N, K, 1.0f, pa.data(), lda, pb.data(), ldb,
                                          0.0f, pc.data(), N); },
                       min_seconds);
  return 2.0 * double(count * M) * double(N) * double(K) / t * 1e-9;
}

std::vector<GemmShape> model_gemm_shapes(int64_t d, int64_t h, int64_t T) {
  // Forward out = x·W ([T,d]x[d,h]); backward dx = dout·Wᵀ and dW = xᵀ·dout.
  return {
      {false, false, T, 3 * d, d, "qkv fwd"},
      {false, true, T, d, 3 * d, "qkv bwd dx"},
      {true, false, d, 3 * d, T, "qkv bwd dW"},
      {false, false, T, h, d, "ffn1 fwd"},
      {false, false, T, d, h, "ffn2 fwd"},
  };
}

namespace {
// One set-up a start-up decision times: the precision and fp32 engine in
// force while its GEMMs run.
struct Setup {
  Precision precision;
  Fp32Engine engine;
};

// Speed of `b` relative to `a` (time of a / time of b, each the sum over the
// shapes of FLOPs / measured GFLOP/s) at the model's shapes. Measured on ONE
// thread: what differs between the candidates is per-core instruction
// throughput (bf16 dot products, AVX-512 against AVX2 kernels), and one
// thread's CPU time is not disturbed by other processes on a shared node. At
// most 512 rows and K 2048 per shape and about 20 ms per measurement, so that
// a decision stays well under a second of start-up. Precision, engine and
// thread counts are restored.
double relative_speed(const std::vector<GemmShape>& shapes, Setup a, Setup b) {
  const int omp_saved = omp_get_max_threads(), blas_saved = openblas_get_num_threads();
  const Fp32Engine engine_saved = g_fp32_engine;
  omp_set_num_threads(1);
  if (!blas_on_openmp()) openblas_set_num_threads(1);
  double ta = 0, tb = 0;
  try {
    for (GemmShape s : shapes) {
      s.M = std::min<int64_t>(s.M, 512);
      s.K = std::min<int64_t>(s.K, 2048);
      if (s.M <= 0 || s.N <= 0 || s.K <= 0) continue;
      const double flop = 2.0 * double(s.M) * double(s.N) * double(s.K);
      g_fp32_engine = a.engine;
      ta += flop / measure_gemm_gflops(a.precision, s, 0.02);
      g_fp32_engine = b.engine;
      tb += flop / measure_gemm_gflops(b.precision, s, 0.02);
    }
  } catch (...) {
    detail::dnnl_drop_primitives();
    g_fp32_engine = engine_saved;
    omp_set_num_threads(omp_saved);
    if (!blas_on_openmp()) openblas_set_num_threads(blas_saved);
    throw;
  }
  g_fp32_engine = engine_saved;
  omp_set_num_threads(omp_saved);
  if (!blas_on_openmp()) openblas_set_num_threads(blas_saved);
  detail::dnnl_drop_primitives();  // created for 1 thread: not for the run's GEMMs
  return tb > 0 ? ta / tb : 0;
}

std::string ratio_text(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2fx", x);
  return buf;
}

// Both decisions pick the challenger only when it is faster by more than this
// (a tie keeps the default, whose arithmetic the other runs share).
constexpr double kMinSpeedup = 1.05;
}  // namespace

Precision resolve_precision(PrecisionChoice requested, std::string* why, const std::vector<GemmShape>& shapes) {
  auto say = [&](const std::string& s) {
    if (why) *why = s;
  };
  if (requested == PrecisionChoice::fp32) {
    say("fp32 requested");
    return Precision::fp32;
  }
  std::string avail;
  const bool ok = bf16_available(&avail);
  if (requested == PrecisionChoice::bf16) {
    if (!ok) throw ConfigError("config key 'train.precision': bf16 requested but not available: " + avail);
    say("bf16 requested (" + avail + ")");
    return Precision::bf16;
  }
  if (!ok) {
    say("auto: fp32, because " + avail);
    return Precision::fp32;
  }
  if (has_amx()) {
    say("auto: bf16, because the CPU has AMX tiles (oneDNN ISA " + cpu_isa() + ")");
    return Precision::bf16;
  }
  // Native bf16 without AMX (e.g. AVX512_BF16 on Zen 4 / Cooper Lake): bf16
  // dot products are at best 2x the fp32 FMA rate and the conversions cost,
  // so measure at the model's own shapes and pick bf16 only if it wins. fp32
  // is timed on the fp32 engine currently set.
  const Fp32Engine e = g_fp32_engine;
  const double speedup = relative_speed(shapes, {Precision::fp32, e}, {Precision::bf16, e});
  if (speedup > kMinSpeedup) {
    say("auto: bf16, because native bf16 without AMX (" + cpu_isa() + ") measured " + ratio_text(speedup) +
        " fp32's speed at this model's GEMM shapes");
    return Precision::bf16;
  }
  say("auto: fp32, because bf16 without AMX (" + cpu_isa() + ") measured only " + ratio_text(speedup) +
      " fp32's speed at this model's GEMM shapes");
  return Precision::fp32;
}

Fp32Engine resolve_fp32_engine(Fp32EngineChoice requested, std::string* why, const std::vector<GemmShape>& shapes,
                               Precision precision) {
  auto say = [&](const std::string& s) {
    if (why) *why = s;
  };
  const bool bf16 = precision == Precision::bf16;
  if (requested == Fp32EngineChoice::openblas) {
    say(std::string("openblas requested") + (bf16 ? " (unused: with bf16 every GEMM but the router's runs on oneDNN)" : ""));
    return Fp32Engine::openblas;
  }
  if (requested == Fp32EngineChoice::onednn) {
    if (!detail::dnnl_built())
      throw ConfigError("config key 'train.fp32_engine': onednn requested but this build has no oneDNN (install "
                        "libdnnl-dev and rebuild, or use openblas or auto)");
    say("onednn requested (oneDNN ISA " + cpu_isa() + ")" +
        (bf16 ? "; unused: with bf16 every GEMM but the router's runs on oneDNN anyway" : ""));
    return Fp32Engine::onednn;
  }
  if (bf16) {
    say("auto: openblas; the precision is bf16, so every GEMM but the router's (always OpenBLAS) runs on oneDNN "
        "and the fp32 engine does not matter");
    return Fp32Engine::openblas;
  }
  if (!detail::dnnl_built()) {
    say("auto: openblas, because this build has no oneDNN");
    return Fp32Engine::openblas;
  }
  // E.g. OpenBLAS held to AVX2 kernels (OPENBLAS_CORETYPE=Haswell) on a CPU
  // with AVX-512, which oneDNN uses: measure at the model's own shapes.
  const double speed = relative_speed(shapes, {Precision::fp32, Fp32Engine::openblas},
                                      {Precision::fp32, Fp32Engine::onednn});
  const std::string measured = "oneDNN (" + cpu_isa() + ") measured " + ratio_text(speed) +
                               " OpenBLAS's speed at this model's GEMM shapes (1 thread)";
  if (speed > kMinSpeedup) {
    say("auto: onednn, " + measured);
    return Fp32Engine::onednn;
  }
  say("auto: openblas, " + measured + (speed > 1.0 ? ", not more than 5 % faster" : ""));
  return Fp32Engine::openblas;
}

Precision resolve_precision(PrecisionChoice requested, std::string* why) {
  // Without the model's shapes: a d=512 block on 1024 tokens stands in.
  return resolve_precision(requested, why, model_gemm_shapes(512, 2048, 1024));
}

}  // namespace finemoe::backend
