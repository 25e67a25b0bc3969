// The CPU backend: the Backend interface (kernels.hpp) over OpenBLAS/oneDNN
// GEMMs and OpenMP loops. Private to src/backend/cpu (tests may include it).
#pragma once
#include "finemoe/kernels.hpp"

namespace finemoe::cpu {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  std::string describe() const override;

  // ---- memory (cpu_backend.cpp) ----
  void* allocate(int64_t bytes) override;
  void deallocate(void* p) override;
  void fill_zero(float* x, int64_t n) override;
  void fill(float* x, int64_t n, float value) override;
  void copy_from_host(void* dst, const void* host_src, int64_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, int64_t bytes) override;
  void copy(void* dst, const void* src, int64_t bytes) override;

  // ---- GEMM (cpu_backend.cpp) ----
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc, backend::Epilogue epilogue) override;
  void gemm_fp32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override;
  void grouped_gemm(bool trans_a, bool trans_b, int64_t count, const int64_t* M, int64_t N, int64_t K, float alpha,
                    const float* const* A, int64_t lda, const float* const* B, int64_t ldb, float beta,
                    float* const* C, int64_t ldc, backend::Epilogue epilogue) override;

  // ---- dense transformer kernels (cpu_backend.cpp, forwarding to ops) ----
  void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t B,
                         int64_t T, int64_t d) override;
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B, int64_t T,
                          int64_t d) override;
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                         int64_t N, int64_t d) override;
  void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                          const float* mean, const float* rstd, int64_t N, int64_t d) override;
  void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C,
                      int64_t OC) override;
  void linear_relu_forward(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C,
                           int64_t OC) override;
  void linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W,
                       int64_t N, int64_t C, int64_t OC) override;
  void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t d,
                         int64_t H) override;
  void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv, const float* att,
                          int64_t B, int64_t T, int64_t d, int64_t H) override;
  void relu_forward(float* out, const float* inp, int64_t n) override;
  void relu_backward(float* dinp, const float* dout, const float* out, int64_t n) override;
  void relu_backward_inplace(float* d, const float* out, int64_t n) override;
  void residual_forward(float* out, const float* a, const float* b, int64_t n) override;
  double crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int64_t N,
                              int64_t V) override;
  void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float scale, int64_t N,
                             int64_t V) override;
  // parameter initialisation (init_kernels.cpp)
  void init_truncated_normal(float* w, int64_t rows, int64_t row_elems, int64_t row0, double sigma, uint64_t seed,
                             uint64_t stream) override;
  // (end of the dense transformer kernels)

  // ---- MoE kernels (moe_kernels.cpp) ----
  void moe_softmax(const float* logits, float* probs, float* lse, int64_t T, int64_t EG) override;
  void moe_select_expert_choice(const float* probs, int64_t T, int64_t EG, int64_t S, int64_t c, int64_t* tok,
                                int64_t* expert, float* weight) override;
  void moe_topk(const float* probs, const float* bias, int64_t T, int64_t EG, int64_t k, int64_t* choice) override;
  int64_t moe_capacity(int64_t* choice, int64_t T, int64_t EG, int64_t k, int64_t S, int64_t cap, int64_t cap_last,
                       int64_t* counts, int64_t* selected, int64_t* group_sel) override;
  void moe_expert_major(const int64_t* choice, const int64_t* counts, const float* probs, int64_t T, int64_t EG,
                        int64_t k, int64_t* tok, int64_t* expert, float* weight) override;
  void moe_token_view(const int64_t* tok, int64_t A, int64_t T, int64_t* tok_off, int64_t* by_tok) override;
  int64_t moe_unserved_tokens(const int64_t* tok_off, int64_t T) override;
  void moe_aux_statistics(const float* probs, const int64_t* group_sel, const float* lse, int64_t T, int64_t EG,
                          int64_t S, double* group_frac, double* group_terms, double* balance, double* z) override;
  double moe_router_entropy(const float* probs, int64_t T, int64_t EG, double* entropy) override;
  void moe_router_backward(const float* probs, const float* lse, const double* group_frac, const int64_t* tok_off,
                           const int64_t* by_tok, const int64_t* expert, const float* weight, const float* dprob,
                           int64_t T, int64_t EG, int64_t S, bool aux, double cb, double cz, float* dlogits) override;
  void moe_gather_rows(const float* src, const int64_t* rows, int64_t n, int64_t d, float* dst) override;
  void moe_combine(const float* y, const float* weight, const int64_t* tok_off, const int64_t* by_tok, int64_t T,
                   int64_t d, float* out) override;
  void moe_combine_backward(const float* dout, const float* y, const int64_t* tok, const float* weight, int64_t A,
                            int64_t d, float* dy, float* dprob) override;
  void moe_scatter_add(const float* gx, const int64_t* tok_off, const int64_t* by_tok, int64_t T, int64_t d,
                       float* dx) override;
  void moe_to_padded(const float* packed, const int64_t* counts, const int64_t* offsets, int64_t K, int64_t rmax,
                     int64_t width, float* padded) override;
  void moe_zero_padding(float* padded, const int64_t* counts, int64_t K, int64_t rmax, int64_t width) override;
  // (end of the MoE kernels)

  // ---- optimizer and reductions (optim_kernels.cpp) ----
  void adamw_step(float* p, float* g, float* m, float* v, int64_t n, const AdamWArgs& a) override;
  void scale(float* x, int64_t n, float factor) override;
  double sum_squares(const float* x, int64_t n) override;
  int64_t find_nonfinite(const float* x, int64_t n) override;
  // (end of the optimizer kernels)
};

}  // namespace finemoe::cpu
