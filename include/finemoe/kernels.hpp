// The backend object: every kernel that model, moe and train code runs.
//
// One Backend per rank. Model, MoE and training code are orchestration only:
// they call these kernels over named buffers and never touch OpenMP, vector
// intrinsics or a math library themselves (cmake/modules.cmake forbids it and
// the layers.check test enforces it). The CPU backend (cpu_backend(),
// src/backend/cpu) runs today's kernels: OpenBLAS / oneDNN GEMMs and OpenMP
// loops. A CUDA backend is an addition that implements this class; the
// naive reference backend of the tests (tests/backend/naive_backend.hpp)
// implements it with plain loops, which proves the seam is complete: a
// training step through it that bypassed the backend would differ.
//
// Conventions are those of the llm.c-style kernels they replace:
// - row-major float arrays; N = rows (tokens), d / C = width; linear weights
//   [in, out], so out = inp · W (+ b);
// - every *_backward ACCUMULATES (+=) into its gradient outputs unless its
//   comment says "overwrites"; forward kernels overwrite their outputs.
// Pointers are device pointers of this backend (host memory for the CPU).
#pragma once
#include <cstdint>
#include <string>

#include "finemoe/backend.hpp"

namespace finemoe {

enum class Device { cpu, cuda };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // One line for logs and moe-bench, e.g. "cpu: OpenBLAS sgemm (fp32)".
  virtual std::string describe() const = 0;

  // ---- memory ------------------------------------------------------------------
  // This backend's memory (host memory for the CPU): 64-byte aligned (GEMM
  // operands), zero-filled. Use DeviceBuffer below rather than these.
  virtual void* allocate(int64_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  virtual void fill_zero(float* x, int64_t n) = 0;
  // Explicit copies where a human, a file or the data loader needs host
  // values; `copy` stays in this backend's memory.
  virtual void copy_from_host(void* dst, const void* host_src, int64_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, int64_t bytes) = 0;
  virtual void copy(void* dst, const void* src, int64_t bytes) = 0;

  // ---- GEMM ------------------------------------------------------------------
  // C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C, row-major, leading
  // dimensions in elements (backend.hpp has the precision rules).
  virtual void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                    backend::Epilogue epilogue = backend::Epilogue::none) = 0;
  // fp32 whatever the precision (the router).
  virtual void gemm_fp32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                         int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) = 0;
  // `count` problems sharing trans flags, N, K and leading dimensions; own M
  // (may be 0) and pointers.
  virtual void grouped_gemm(bool trans_a, bool trans_b, int64_t count, const int64_t* M, int64_t N, int64_t K,
                            float alpha, const float* const* A, int64_t lda, const float* const* B, int64_t ldb,
                            float beta, float* const* C, int64_t ldc,
                            backend::Epilogue epilogue = backend::Epilogue::none) = 0;

  // ---- dense transformer kernels -----------------------------------------------
  // out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
  virtual void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t B,
                                 int64_t T, int64_t d) = 0;
  virtual void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B,
                                  int64_t T, int64_t d) = 0;
  // LayerNorm over the last dim (eps 1e-5); saves mean and rstd [N].
  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                 const float* b, int64_t N, int64_t d) = 0;
  virtual void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                  const float* w, const float* mean, const float* rstd, int64_t N, int64_t d) = 0;
  // out[N,OC] = inp[N,C] · W[C,OC] + b[OC] (b may be null)
  virtual void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C,
                              int64_t OC) = 0;
  // out = max(inp · W + b, 0)
  virtual void linear_relu_forward(float* out, const float* inp, const float* W, const float* b, int64_t N,
                                   int64_t C, int64_t OC) = 0;
  // dinp may be null (no input gradient wanted); db may be null.
  virtual void linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp,
                               const float* W, int64_t N, int64_t C, int64_t OC) = 0;
  // Causal MHA on packed qkv [B,T,3d]; out [B,T,d]; att [B,H,T,T] saved
  // softmax probabilities; scale 1/sqrt(d/H).
  virtual void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t d,
                                 int64_t H) = 0;
  // `scratch` holds B·H·T·T floats.
  virtual void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                                  const float* att, int64_t B, int64_t T, int64_t d, int64_t H) = 0;
  virtual void relu_forward(float* out, const float* inp, int64_t n) = 0;
  // dinp += dout where out > 0
  virtual void relu_backward(float* dinp, const float* dout, const float* out, int64_t n) = 0;
  // d = out > 0 ? d : 0, in place
  virtual void relu_backward_inplace(float* d, const float* out, int64_t n) = 0;
  // out = a + b
  virtual void residual_forward(float* out, const float* a, const float* b, int64_t n) = 0;
  // Softmax cross-entropy over V classes, N rows: probs [N,V], per-row losses
  // [N] (nats); returns the mean loss.
  virtual double crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets,
                                      int64_t N, int64_t V) = 0;
  // dlogits += scale · (probs - onehot(target))
  virtual void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float scale,
                                     int64_t N, int64_t V) = 0;
  // Parameter initialisation: overwrites rows [0, rows) of w (row_elems floats
  // each) with sigma · truncated normal (±2σ, rng.hpp). Row r draws its values
  // in order from the counter-based stream Rng(seed, stream).split(row0 + r),
  // so every row depends only on (seed, stream, its GLOBAL row row0 + r), not
  // on the rank or thread that fills it: backends must match bit for bit.
  virtual void init_truncated_normal(float* w, int64_t rows, int64_t row_elems, int64_t row0, double sigma,
                                     uint64_t seed, uint64_t stream) = 0;
  // (end of the dense transformer kernels)

  // ---- MoE kernels: router, selection, permute/unpermute, experts' padding ----
  // (end of the MoE kernels)

  // ---- optimizer and reductions ------------------------------------------------
  // The per-tensor constants of one AdamW update (optimizer.hpp defines the
  // update; adamw_update derives these once per step, in fp32).
  struct AdamWArgs {
    float beta1, beta2, eps, lr;
    float inv_bc1, inv_bc2;    // 1/(1-β1^t), 1/(1-β2^t)
    float weight_decay;        // 0 for tensors without decay
    float grad_scale = 1.0f;   // g is multiplied by this first unless it is exactly 1
    bool zero_grads = false;   // g = 0 afterwards
  };
  // One fused AdamW pass over n elements of one tensor, in place. Per i, with
  // gi = (grad_scale != 1 ? g[i]·grad_scale : g[i]):
  //   m[i] = β1·m[i] + (1-β1)·gi;   v[i] = β2·v[i] + (1-β2)·gi·gi;
  //   p[i] -= lr · ((m[i]·inv_bc1) / (sqrt(v[i]·inv_bc2) + eps) + weight_decay·p[i]);
  //   g[i] = 0 if zero_grads.
  // fp32 arithmetic in exactly this order (the CPU backend's bits are those of
  // every checkpoint it wrote: bit-exact resume depends on them).
  virtual void adamw_step(float* p, float* g, float* m, float* v, int64_t n, const AdamWArgs& a) = 0;
  // x[i] *= factor for i < n (fp32; scale_grads).
  virtual void scale(float* x, int64_t n, float factor) = 0;
  // Σ x[i]² in double, deterministic: the sum of double(x[i])·double(x[i]) over
  // consecutive chunks of kReduceChunk elements (reduce.hpp), each chunk summed
  // in index order, then the chunk sums added in chunk order. The same bits
  // for any thread count (the gradient norm and clipping depend on it).
  virtual double sum_squares(const float* x, int64_t n) = 0;
  // Index of the first element of x[0, n) that is NaN or ±Inf, or -1 if every
  // element is finite (the trainer's divergence report).
  virtual int64_t find_nonfinite(const float* x, int64_t n) = 0;
  // (end of the optimizer kernels)
};

// This process's CPU backend (one per rank; created on first use).
Backend& cpu_backend();

// An owning array of T in a backend's memory: zero-filled on (re)allocation,
// reallocated only when the size changes (callers size it once per shape, so
// steady-state steps do not allocate). No element access: the memory may not
// be the host's; read it through Backend::copy_to_host.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(Backend& be) : be_(&be) {}
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void resize(int64_t n) {
    if (n == n_) return;
    release();
    if (n > 0) p_ = static_cast<T*>(be_->allocate(n * int64_t(sizeof(T))));
    n_ = n;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  int64_t size() const { return n_; }
  Backend& backend() const { return *be_; }

 private:
  void release() {
    if (p_) be_->deallocate(p_);
    p_ = nullptr;
    n_ = 0;
  }
  Backend* be_;
  T* p_ = nullptr;
  int64_t n_ = 0;
};

// "cpu" | "cuda".
std::string device_name(Device d);

// run.device ("cpu" | "cuda" | "auto") -> this process's backend, and in *why
// (if not null) one line saying why. cpu: the CPU backend; auto: the CPU
// backend ("auto: no CUDA backend built"); cuda: a ConfigError naming
// run.device (this build has no CUDA backend yet; it is planned). Anything
// else: a ConfigError naming run.device and the allowed values.
Backend& backend_for(const std::string& device, std::string* why = nullptr);

}  // namespace finemoe
