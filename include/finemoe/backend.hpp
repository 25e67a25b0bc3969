// The narrow kernel interface model code calls for matrix work. Which engine
// runs it (OpenBLAS sgemm, oneDNN fp32/bf16, cuBLAS) is the backend's business:
// model code never includes BLAS, oneDNN, CUDA or MPI headers.
//
// All matrices are row-major. gemm computes
//     C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C
// with op(X) = X or Xᵀ (trans_*), leading dimensions in elements.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "finemoe/kernels.hpp"
#include "finemoe/config.hpp"

namespace finemoe::backend {

enum class Precision { fp32, bf16 };

// Precision of GEMM inputs (accumulation is always fp32). Global per process;
// set once at start-up from train.precision. The router and everything
// outside GEMMs stay fp32 regardless.
void set_precision(Precision p);
Precision precision();
// Resolves train.precision for this CPU; `why` receives a one-line
// explanation of the choice.
Precision resolve_precision(PrecisionChoice requested, std::string* why);
// e.g. "OpenBLAS sgemm (fp32)" or "oneDNN matmul, avx512_core_amx (bf16)".
std::string engine_description();

// Epilogue (the elementwise function fused into or applied right after a
// GEMM) is declared with the Backend interface, kernels.hpp.

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
          Epilogue epilogue = Epilogue::none);

// gemm in fp32 whatever the precision setting: for the few products that must
// stay fp32 under bf16 training (the router, SCIENCE.md). OpenBLAS sgemm.
void gemm_fp32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Same operation on `count` independent problems that share trans flags, N, K
// and leading dimensions but have their own M (rows; may be 0) and pointers.
// This is the experts' grouped GEMM: hundreds of small problems at large G.
void grouped_gemm(bool trans_a, bool trans_b, int64_t count, const int64_t* M, int64_t N, int64_t K,
                  float alpha, const float* const* A, int64_t lda, const float* const* B, int64_t ldb,
                  float beta, float* const* C, int64_t ldc, Epilogue epilogue = Epilogue::none);

// Calls of gemm, gemm_fp32 and grouped_gemm since start-up (relaxed atomic
// count; the CPU backend's kernels use these functions). The naive-backend
// step test checks that a model on another backend never reaches them.
int64_t gemm_calls();

// ---- Engine control and measurement (added by the performance issue) -------
// Threads: OpenMP and OpenBLAS use ONE pool size (set_num_threads sets both).
// OpenBLAS is never asked for more than one thread inside an OpenMP parallel
// region (grouped_gemm pins it to 1 around its loop), so the two pools never
// run at the same time and the cores are not oversubscribed. Do not call
// gemm() from inside your own `omp parallel`; use grouped_gemm for that.
void set_num_threads(int n);  // n <= 0: keep the runtime default
int num_threads();

// Which library runs fp32 GEMMs, gemm() and grouped_gemm() alike (bf16
// always runs on oneDNN; gemm_fp32 always on OpenBLAS). Default openblas in
// the backend; moe-train and moe-bench set it from train.fp32_engine through
// resolve_fp32_engine. oneDNN fp32 is not a neutral swap: oneDNN 2.6
// allocates inside every execute (the no-allocation tests) and its
// primitives' blocking depends on the thread count, so results change with
// train.threads (docs/performance.md).
enum class Fp32Engine { openblas, onednn };
void set_fp32_engine(Fp32Engine e);  // onednn in a build without oneDNN: Error
Fp32Engine fp32_engine();
// "fp32" | "bf16" and "openblas" | "onednn": the names train.precision,
// train.fp32_engine, the checkpoint and moe-bench's JSON use.
std::string precision_name(Precision p);
std::string fp32_engine_name(Fp32Engine e);
// The engine of that name; ConfigError naming `key` otherwise (for "auto"
// too: resolve it first).
Fp32Engine fp32_engine_from_name(const std::string& name, const std::string& key = "train.fp32_engine");
// oneDNN is built into this binary (fp32 engine onednn, bf16 GEMMs).
bool onednn_built();

// How grouped_gemm runs its problems: serial = one multi-threaded GEMM per
// problem; omp_loop = OpenMP loop over problems, each GEMM single-threaded;
// batched = one oneDNN batched matmul over all problems (oneDNN engines only,
// and only when every problem has the same M and the operands lie at constant
// strides, e.g. expert choice's equal-capacity experts; else as automatic):
// measured no faster than omp_loop on the standard MoE (docs/performance.md),
// so opt-in; automatic = omp_loop when there are at least 2 problems per
// thread, else serial.
enum class GroupedVariant { automatic, serial, omp_loop, batched };
void set_grouped_variant(GroupedVariant v);
GroupedVariant grouped_variant();

// bf16 GEMM is usable here (oneDNN built and its effective ISA, which honours
// ONEDNN_MAX_CPU_ISA, has native bf16 dot products); `why` says why not.
bool bf16_available(std::string* why = nullptr);
bool has_amx();  // effective ISA is avx512_core_amx
std::string cpu_isa();  // oneDNN's effective ISA name, or "none"
// How the loaded OpenBLAS threads: "openmp" (it runs on OpenMP's team, so BLAS
// and finemoe's loops share one pool), "pthread" (a second pool) or "serial".
std::string blas_threading();
// Size of the OpenMP team the last multi-problem grouped_gemm loop ran on
// (0 before any): lets a test see that BLAS threading did not shrink it.
int last_grouped_team_size();

// ---- bf16 weight cache -------------------------------------------------------
// A bf16 GEMM converts its fp32 operands first. For weights that is wasted
// work: each weight feeds the forward GEMM and the backward dx GEMM (and at
// large G hundreds of expert GEMMs) but changes only once per optimizer step.
// The trainer therefore registers its parameter buffers; a bf16 GEMM whose B
// lies inside a registered range uses a bf16 copy made once per "epoch".
// weights_updated() starts a new epoch and MUST follow every write to the
// registered weights (adamw_update calls it; so does register_weights). fp32
// GEMMs never use the cache.
//   off      convert B in every GEMM (as without registration)
//   plain    one dense bf16 copy per weight (2 B/param), shared by the forward
//            (B) and backward (Bᵀ) GEMMs through strides (the default)
//   blocked  a copy in the layout the oneDNN primitive prefers, which also
//            saves oneDNN's per-call repacking; one copy per use (4 B/param)
enum class WeightCacheMode { off, plain, blocked };
void set_weight_cache_mode(WeightCacheMode m);  // drops all copies
WeightCacheMode weight_cache_mode();
void register_weights(const float* base, int64_t count);
void clear_registered_weights();  // unregisters every range and frees the copies
void weights_updated();
struct WeightCacheStats {
  int64_t conversions = 0;  // copies made (cumulative)
  int64_t hits = 0;         // GEMMs that used an up-to-date copy (cumulative)
  int64_t bytes = 0;        // held now
};
WeightCacheStats weight_cache_stats();
// Registers ranges for the lifetime of the object (the trainer's loop).
class RegisteredWeights {
 public:
  RegisteredWeights(std::initializer_list<std::pair<const float*, int64_t>> ranges);
  ~RegisteredWeights();
  RegisteredWeights(const RegisteredWeights&) = delete;
  RegisteredWeights& operator=(const RegisteredWeights&) = delete;
};

struct GemmShape {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  std::string name;  // e.g. "qkv fwd"
};
// Best-of-repeats GFLOP/s (2MNK per call) of gemm at this shape in precision
// p, over about min_seconds of wall time. Operands are 64-byte aligned.
double measure_gemm_gflops(Precision p, const GemmShape& s, double min_seconds = 0.2);
// Best-of-repeats GFLOP/s of grouped_gemm on `count` problems of M rows each.
double measure_grouped_gflops(Precision p, int64_t count, int64_t M, int64_t N, int64_t K, bool trans_a,
                              bool trans_b, double min_seconds = 0.2);
// Representative GEMMs of one training step of a model with d_model d, FFN
// hidden width d_hidden (4d dense, d_expert for MoE) and `tokens` rows.
std::vector<GemmShape> model_gemm_shapes(int64_t d_model, int64_t d_hidden, int64_t tokens);
// resolve_precision with the start-up micro-benchmark run at these shapes
// ("auto" on native bf16 without AMX picks bf16 only if it is faster there).
Precision resolve_precision(PrecisionChoice requested, std::string* why, const std::vector<GemmShape>& shapes);
// Resolves train.fp32_engine for
// `precision` (by default the one currently set); `why` receives one line.
// Explicit requests are returned as they are (onednn in a build without
// oneDNN is a ConfigError naming the key). auto: openblas under bf16 (every
// GEMM but gemm_fp32 then runs on oneDNN, so the fp32 engine does not
// matter) and in a build without oneDNN; otherwise both engines are timed at
// these shapes, with resolve_precision's caps and on one thread, and oneDNN
// is picked only if it is more than 5 % faster. `why` then names the measured
// speed ratio. Neither the precision nor the engine is changed.
Fp32Engine resolve_fp32_engine(Fp32EngineChoice requested, std::string* why,
                               const std::vector<GemmShape>& shapes, Precision precision = backend::precision());

}  // namespace finemoe::backend
