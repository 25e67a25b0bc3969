// Causal multi-head self-attention on packed qkv [B,T,3d].
//
// Per (batch, head) pair the work is three small GEMMs (QKᵀ, P·V and their
// backward twins). They are issued as ONE backend::grouped_gemm over all B·H
// pairs, so the backend decides how to parallelise them (many small problems
// in parallel, or each one threaded). Q, K and V are read in place from the
// packed qkv buffer through leading dimension 3d: no head transposes.
// The [B,H,T,T] probabilities are materialised (`att`); the causal mask is
// applied in the softmax (entries above the diagonal are exactly 0, which the
// following GEMMs rely on).
//
// Causal skipping: the products whose output rows are query rows (QKᵀ, P·V,
// dout·Vᵀ, dS·K) run per block of kRowBlock query rows [r0, r1), touching only
// keys [0, r1): the rest of those rows is masked. That does 5/8 of the full
// work at T = 4·kRowBlock and tends to 1/2 for long sequences. Dropped terms
// are the trailing exact zeros of each sum (or products never read), so every
// computed element is the same sum mathematically; the BLAS may still sum it
// in another order for the other shapes (bit-identical with OpenBLAS's
// SkylakeX kernels, last-bit differences with its Zen/Haswell kernels; see
// kMaxBlockedKeys and the test AttentionCausalBlocksMatchFullProducts).
// dV and dK (output rows are keys) keep the full products.
#include <algorithm>
#include <cmath>
#include <vector>

#include "finemoe/backend.hpp"
#include "ops.hpp"
#include "finemoe/profile.hpp"

namespace finemoe::ops {

namespace {

// Pointer tables for the grouped GEMMs. Kept per thread and only ever grown,
// so steady-state steps do not allocate.
struct GroupTables {
  std::vector<int64_t> M;
  std::vector<const float*> A, B;
  std::vector<float*> C;
  void ensure(int64_t count, int64_t rows) {
    if (int64_t(M.size()) < count) {
      M.resize(count);
      A.resize(count);
      B.resize(count);
      C.resize(count);
    }
    for (int64_t i = 0; i < count; ++i) M[i] = rows;
  }
};

GroupTables& tables() {
  thread_local GroupTables t;
  return t;
}

constexpr int64_t kRowBlock = 64;
// P·V and dS·K reduce over keys (K = r1 when blocked). BLAS libraries split
// long reductions into chunks whose size depends on K (OpenBLAS halves K
// between Q and 2Q), so dropping the zero tail can regroup the sum and change
// the last bits. Up to this length the blocked and full products were measured
// bit-identical (OpenBLAS fp32 and oneDNN bf16, T = 37..300); longer sequences
// keep the full K = T products there (measured different at T = 512).
constexpr int64_t kMaxBlockedKeys = 256;

// Calls gemm_block(r0, r1) for the query row blocks of a length-T sequence
// (one block [0, T) when !blocked).
// The last block takes the tail (kRowBlock to 2·kRowBlock - 1 rows): a GEMM
// of a few rows may run another kernel of the BLAS with another summation
// order (measured: OpenBLAS fp32, 2-row block at T = 130 changed the last bits).
template <typename F>
void for_row_blocks(int64_t T, F&& gemm_block, bool blocked = true) {
  for (int64_t r0 = 0; r0 < T;) {
    const int64_t r1 = !blocked || T - r0 < 2 * kRowBlock ? T : r0 + kRowBlock;
    gemm_block(r0, r1);
    r0 = r1;
  }
}


}  // namespace

void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t d, int64_t H) {
  FINEMOE_PROFILE("attention");
  const int64_t hd = d / H, C3 = 3 * d, BH = B * H;
  const float scale = 1.0f / std::sqrt(float(hd));
  GroupTables& g = tables();
  g.ensure(BH, T);

  // preatt[b,h][r0:r1, 0:r1] = scale · Q[r0:r1] K[0:r1]ᵀ per query row block
  for_row_blocks(T, [&](int64_t r0, int64_t r1) {
    g.ensure(BH, r1 - r0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t i = b * H + h;
        g.A[i] = qkv + (b * T + r0) * C3 + h * hd;  // Q rows r0..r1
        g.B[i] = qkv + b * T * C3 + d + h * hd;     // K rows 0..r1
        g.C[i] = att + i * T * T + r0 * T;
      }
    backend::grouped_gemm(false, true, BH, g.M.data(), r1, hd, scale, g.A.data(), C3, g.B.data(), C3, 0.f,
                          g.C.data(), T);
  });

  // Causal softmax; masked entries set to exactly 0 (softmax.cpp).
  causal_softmax_forward(att, BH * T, T);

  // out[b,r0:r1,h] = P[r0:r1, 0:r1] · V[0:r1]   (written with stride d)
  for_row_blocks(T, [&](int64_t r0, int64_t r1) {
    g.ensure(BH, r1 - r0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t i = b * H + h;
        g.A[i] = att + i * T * T + r0 * T;
        g.B[i] = qkv + b * T * C3 + 2 * d + h * hd;  // V
        g.C[i] = out + (b * T + r0) * d + h * hd;
      }
    backend::grouped_gemm(false, false, BH, g.M.data(), hd, r1, 1.f, g.A.data(), T, g.B.data(), C3, 0.f,
                          g.C.data(), d);
  }, T <= kMaxBlockedKeys);
}

void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv, const float* att,
                        int64_t B, int64_t T, int64_t d, int64_t H) {
  FINEMOE_PROFILE("attention");
  const int64_t hd = d / H, C3 = 3 * d, BH = B * H;
  const float scale = 1.0f / std::sqrt(float(hd));
  GroupTables& g = tables();
  g.ensure(BH, T);

  // dP[r0:r1, 0:r1] = dout[r0:r1] · V[0:r1]ᵀ  -> scratch (the rest is masked)
  for_row_blocks(T, [&](int64_t r0, int64_t r1) {
    g.ensure(BH, r1 - r0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t i = b * H + h;
        g.A[i] = dout + (b * T + r0) * d + h * hd;
        g.B[i] = qkv + b * T * C3 + 2 * d + h * hd;
        g.C[i] = scratch + i * T * T + r0 * T;
      }
    backend::grouped_gemm(false, true, BH, g.M.data(), r1, hd, 1.f, g.A.data(), d, g.B.data(), C3, 0.f,
                          g.C.data(), T);
  });
  g.ensure(BH, T);

  // dV += Pᵀ · dout
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t i = b * H + h;
      g.A[i] = att + i * T * T;
      g.B[i] = dout + b * T * d + h * hd;
      g.C[i] = dqkv + b * T * C3 + 2 * d + h * hd;
    }
  backend::grouped_gemm(true, false, BH, g.M.data(), hd, T, 1.f, g.A.data(), T, g.B.data(), d, 1.f,
                        g.C.data(), C3);

  // Softmax backward in place: dS = scale · P ⊙ (dP - Σ_j P·dP). Masked
  // entries (P = 0) become exactly 0, as the GEMMs below require.
  causal_softmax_backward(scratch, att, BH * T, T, scale);

  // dQ[r0:r1] += dS[r0:r1, 0:r1] · K[0:r1]
  for_row_blocks(T, [&](int64_t r0, int64_t r1) {
    g.ensure(BH, r1 - r0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t i = b * H + h;
        g.A[i] = scratch + i * T * T + r0 * T;
        g.B[i] = qkv + b * T * C3 + d + h * hd;
        g.C[i] = dqkv + (b * T + r0) * C3 + h * hd;
      }
    backend::grouped_gemm(false, false, BH, g.M.data(), hd, r1, 1.f, g.A.data(), T, g.B.data(), C3, 1.f,
                          g.C.data(), C3);
  }, T <= kMaxBlockedKeys);
  g.ensure(BH, T);

  // dK += dSᵀ · Q
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t i = b * H + h;
      g.A[i] = scratch + i * T * T;
      g.B[i] = qkv + b * T * C3 + h * hd;
      g.C[i] = dqkv + b * T * C3 + d + h * hd;
    }
  backend::grouped_gemm(true, false, BH, g.M.data(), hd, T, 1.f, g.A.data(), T, g.B.data(), C3, 1.f,
                        g.C.data(), C3);
}

}  // namespace finemoe::ops
