// The backend object: every kernel that model, moe and train code runs.
//
// One Backend per rank. Model, MoE and training code are orchestration only:
// they call these kernels over named buffers and never touch OpenMP, vector
// intrinsics or a math library themselves (cmake/modules.cmake forbids it and
// the layers.check test enforces it). The CPU backend (cpu_backend(),
// device.hpp; src/backend/cpu) runs today's kernels: OpenBLAS / oneDNN GEMMs
// and OpenMP loops. A CUDA backend is an addition that implements this class;
// the naive reference backend of the tests (tests/backend/naive_backend.hpp)
// implements it with plain loops, which proves the seam is complete: a
// training step through it that bypassed the backend would differ.
//
// This header is the interface alone, owned by module core so that it sits
// below every backend: core's ParamStore (params.hpp) keeps its tensors in a
// backend's memory through DeviceBuffer, and each backend module implements
// the class. Which backend a process runs (cpu_backend(), backend_for) is
// device.hpp, in the CPU backend's module.
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

namespace finemoe::backend {

// Elementwise function applied to C after the product: fused into the GEMM
// kernel where the engine can (oneDNN post-op), otherwise applied right after
// each product while C is still in cache (grouped: per problem). Declared
// with the interface whose GEMMs take it; backend.hpp's engine functions
// take it too.
enum class Epilogue { none, relu };

}  // namespace finemoe::backend

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
  // x[i] = value for i < n, the value's bits exactly (-0 and NaN payloads
  // included): init_parameters' LayerNorm ones and zeros.
  virtual void fill(float* x, int64_t n, float value) = 0;
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
  // Shapes: T tokens, EG = E·G global experts, d model width, A assignments.
  // An assignment list is EXPERT-MAJOR (global expert ascending, then token
  // ascending): tok[A], expert[A], weight[A]. Its per-token CSR view: token t
  // owns assignment ids by_tok[tok_off[t] .. tok_off[t+1]), ascending (so
  // experts ascending). Selection order ("best first") everywhere: value
  // descending, then index ascending; NaN ranks as -1 and -0 ties with +0, so
  // the order is total even after training has diverged.
  // Memory: arrays sized by tokens or assignments (logits, probs, lse, tok,
  // expert, weight, tok_off, by_tok, choice, entropy, group_frac,
  // group_terms, rows) are in this backend's memory. The per-expert COUNTS
  // (counts, selected, group_sel, offsets: E·G, K or groups·E·G integers)
  // are HOST memory: the dispatcher sizes its exchanges and the experts
  // their grouped-GEMM problems from them on the host, so a device backend
  // copies them back inside the kernel that produces them (one small copy
  // per layer, as Megatron-Core's dispatchers do with tokens_per_expert).
  //
  // probs[T,EG] = softmax of each row of logits[T,EG]; lse[T] = each row's
  // logsumexp m + log Σ exp(l − m) (m the row max). Overwrites both.
  virtual void moe_softmax(const float* logits, float* probs, float* lse, int64_t T, int64_t EG) = 0;
  // Expert choice: in each group g of S consecutive tokens (T % S == 0),
  // every expert e takes the c best tokens by probs[t,e] (ties: lower token).
  // Overwrites the expert-major list of A = EG·(T/S)·c assignments: expert
  // e's rows are e·(T/S)·c + g·c + j, groups in order, tokens ascending within
  // a group; weight = probs[tok, expert].
  virtual void moe_select_expert_choice(const float* probs, int64_t T, int64_t EG, int64_t S, int64_t c,
                                        int64_t* tok, int64_t* expert, float* weight) = 0;
  // Token choice, step 1: choice[t, 0..k) = the k best experts of token t by
  // probs[t,j] + bias[j] (bias [EG] may be null: by probs), best first (ties:
  // lower expert id). Overwrites choice[T,k].
  virtual void moe_topk(const float* probs, const float* bias, int64_t T, int64_t EG, int64_t k,
                        int64_t* choice) = 0;
  // Token choice, step 2, the capacity pass, sequential in token order (that
  // order defines who drops): within each group of S consecutive tokens (the
  // last may be shorter) an expert accepts choices until it holds `cap` of
  // them (`cap_last` in a shorter last group), visiting tokens ascending and a
  // token's choices best first; a refused choice becomes -1 in `choice`.
  // Overwrites counts[EG] (kept per expert), selected[EG] (chosen before
  // drops) and group_sel[ceil(T/S), EG] (chosen before drops, per group);
  // returns the number of refused choices.
  virtual int64_t moe_capacity(int64_t* choice, int64_t T, int64_t EG, int64_t k, int64_t S, int64_t cap,
                               int64_t cap_last, int64_t* counts, int64_t* selected, int64_t* group_sel) = 0;
  // Token choice, step 3: the expert-major list of the kept choices (>= 0) of
  // choice[T,k], counts[EG] of them per expert (A = Σ counts); weight =
  // probs[tok, expert]. Overwrites tok, expert, weight [A].
  virtual void moe_expert_major(const int64_t* choice, const int64_t* counts, const float* probs, int64_t T,
                                int64_t EG, int64_t k, int64_t* tok, int64_t* expert, float* weight) = 0;
  // The per-token CSR view of an expert-major list (tok[A], tokens < T).
  // Overwrites tok_off[T+1] and by_tok[A].
  virtual void moe_token_view(const int64_t* tok, int64_t A, int64_t T, int64_t* tok_off, int64_t* by_tok) = 0;
  // Tokens with no assignment: #{t : tok_off[t+1] == tok_off[t]}.
  virtual int64_t moe_unserved_tokens(const int64_t* tok_off, int64_t T) = 0;
  // The auxiliary-loss statistics (moe.hpp, "Auxiliary losses"), groups of S
  // tokens (the last may be shorter), ng = ceil(T/S). Per group:
  // group_frac[g,i] = n_{g,i} / Σ_j n_{g,j} (0 when the group chose nothing)
  // from group_sel[ng,EG] = n, and group_terms[g] = EG·Σ_{t∈g} Σ_i
  // f_{g,i}·p_{t,i} / T (double). Overwrites both, then *balance = Σ_g
  // group_terms[g] (group order) and *z = Σ_t lse[t]² / T (0 if T == 0):
  // host pointers.
  virtual void moe_aux_statistics(const float* probs, const int64_t* group_sel, const float* lse, int64_t T,
                                  int64_t EG, int64_t S, double* group_frac, double* group_terms, double* balance,
                                  double* z) = 0;
  // Softmax entropy of each row of probs[T,EG] in nats, in double, 0·log 0 =
  // 0: overwrites entropy[T]; returns their mean (0 if T == 0).
  virtual double moe_router_entropy(const float* probs, int64_t T, int64_t EG, double* entropy) = 0;
  // The router's softmax backward, OVERWRITES dlogits[T,EG]. dprob[A] is
  // ∂L/∂weight of each assignment (list + CSR view as above). Per token t,
  // with dot = Σ_{i of t} dprob[i]·weight[i]:
  //   aux == false: dl_j = −p_j·dot;
  //   aux == true:  dot += Σ_j float(cb·f_j)·p_j with f = group_frac[t / S],
  //                 dl_j = p_j·(float(cb·f_j) − dot + float(cz·lse[t]));
  // then dl_{expert[i]} += p_{expert[i]}·dprob[i] for each assignment i of t.
  // group_frac and lse are read only when aux.
  virtual void moe_router_backward(const float* probs, const float* lse, const double* group_frac,
                                   const int64_t* tok_off, const int64_t* by_tok, const int64_t* expert,
                                   const float* weight, const float* dprob, int64_t T, int64_t EG, int64_t S,
                                   bool aux, double cb, double cz, float* dlogits) = 0;
  // dst[i,:] = src[rows[i],:] for i < n, rows of width d (the permute).
  virtual void moe_gather_rows(const float* src, const int64_t* rows, int64_t n, int64_t d, float* dst) = 0;
  // The unpermute: out[t,:] = Σ_{i of t} weight[i]·y[i,:], assignments of t in
  // CSR order (experts ascending). OVERWRITES out[T,d] (0 for unserved tokens).
  virtual void moe_combine(const float* y, const float* weight, const int64_t* tok_off, const int64_t* by_tok,
                           int64_t T, int64_t d, float* out) = 0;
  // Backward of moe_combine per assignment i < A: dprob[i] = Σ_j
  // dout[tok[i],j]·y[i,j] (float, j ascending) and dy[i,:] = weight[i]·
  // dout[tok[i],:]. Overwrites dprob[A] and dy[A,d].
  virtual void moe_combine_backward(const float* dout, const float* y, const int64_t* tok, const float* weight,
                                    int64_t A, int64_t d, float* dy, float* dprob) = 0;
  // dx[t,:] += Σ_{i of t} gx[i,:], assignments in CSR order: ACCUMULATES.
  virtual void moe_scatter_add(const float* gx, const int64_t* tok_off, const int64_t* by_tok, int64_t T,
                               int64_t d, float* dx) = 0;
  // Experts' padded layout: K experts, expert k has counts[k] packed rows at
  // row offsets[k] of packed[·, width]; padded is [K, rmax, width]. Overwrites
  // padded: expert k's rows copied, rows counts[k] .. rmax zeroed.
  virtual void moe_to_padded(const float* packed, const int64_t* counts, const int64_t* offsets, int64_t K,
                             int64_t rmax, int64_t width, float* padded) = 0;
  // Zeroes rows counts[k] .. rmax of each expert k of padded[K, rmax, width].
  virtual void moe_zero_padding(float* padded, const int64_t* counts, int64_t K, int64_t rmax, int64_t width) = 0;
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
  // Grow-only sizing: reallocates (zero-filled) only when n exceeds the size,
  // for buffers whose need varies between calls (MoE rows, exchanges).
  void grow(int64_t n) {
    if (n > n_) resize(n);
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

}  // namespace finemoe
