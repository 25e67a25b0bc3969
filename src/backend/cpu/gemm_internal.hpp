// Internals of the CPU GEMM backend shared by its .cpp files (not a public
// header: model code only sees include/finemoe/backend.hpp).
#pragma once
#include <cstdint>
#include <string>

#include "finemoe/backend.hpp"

namespace finemoe::backend::detail {

// True when this binary was built with oneDNN (FINEMOE_HAVE_DNNL).
bool dnnl_built();
// oneDNN's effective ISA after ONEDNN_MAX_CPU_ISA, e.g. "avx512_core_bf16";
// "none" without oneDNN.
std::string dnnl_isa_name();
// The effective ISA executes bf16 dot products natively (avx512_core_bf16 or AMX).
bool dnnl_native_bf16();
bool dnnl_amx();

// oneDNN matmul C = alpha·op(A)·op(B) + beta·C with fp32 pointers. bf16=true
// converts A and B to bf16 in a reusable per-thread workspace first (fp32
// accumulation and output). Primitives are cached per shape key. Safe to call
// from inside an OpenMP parallel region (it then runs single-threaded), as long
// as prepare() was called for the same key outside it first.
// relu: max(C, 0) as a fused eltwise post-op.
void dnnl_gemm(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, bool relu = false);
// Creates (and caches) the primitive for this key without running it and, for
// bf16 with B inside a registered weight range, converts B into the weight
// cache (so that the parallel loop that follows only reads it).
void dnnl_prepare(bool bf16, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* B,
                  int64_t lda, int64_t ldb, float beta, int64_t ldc, bool relu = false);
// `count` problems of the same shape whose operands lie at constant strides
// (problem g: A + g·stride_a, B + g·stride_b, C + g·stride_c) as ONE batched
// matmul primitive, threaded by oneDNN. Call from serial code only. B
// stacked contiguously inside a registered weight range uses one cached bf16
// copy of the whole stack (plain weight-cache mode).
void dnnl_batched_gemm(bool bf16, bool ta, bool tb, int64_t count, int64_t M, int64_t N, int64_t K, float alpha,
                       const float* A, int64_t stride_a, int64_t lda, const float* B, int64_t stride_b, int64_t ldb,
                       float beta, float* C, int64_t stride_c, int64_t ldc, bool relu);
int64_t dnnl_cache_size();  // cached single-GEMM primitives
// Forgets every cached primitive (those in use stay alive until their GEMM
// returns). The start-up measurements call it: a primitive's blocking depends
// on the thread count it was created with, and they run on one thread, so a
// primitive they cached must not be reused by the run's own GEMMs (a run that
// skips the measurement, e.g. on resume, would compute differently).
void dnnl_drop_primitives();
// The bf16 weight cache behind backend::register_weights & co.
void dnnl_set_weight_cache_mode(WeightCacheMode m);
WeightCacheMode dnnl_weight_cache_mode();
void dnnl_register_weights(const float* base, int64_t count);
void dnnl_clear_weights();
void dnnl_weights_updated();
WeightCacheStats dnnl_weight_cache_stats();

}  // namespace finemoe::backend::detail
