// The CPU backend's dense transformer kernels: forward/backward pairs, llm.c
// style, plain functions over raw row-major float arrays, readable top to
// bottom (GEMMs through backend.hpp's engines, the rest OpenMP loops with
// fixed summation orders).
//
// Private to src/backend/cpu. Model code does not call these: it calls the
// Backend object (finemoe/kernels.hpp), and cpu::CpuBackend
// (cpu_backend.cpp) forwards each dense kernel to the function of the same
// name here, so this is what the CPU backend runs. Other backends (the naive
// reference of the tests, a CUDA one) implement the same definitions their
// own way; the definitions and conventions below are kernels.hpp's.
//
// Conventions
// - N = rows (tokens), d / C = width. Linear weights are stored [in, out], so
//   out = inp · W (+ b).
// - Every *_backward ACCUMULATES (+=) into its gradient outputs (dinp, dW, db):
//   the caller zeroes gradients once per step. This is what makes residual
//   connections and shared inputs work without extra copies.
// - Forward functions overwrite their outputs.
#pragma once
#include <cstdint>

namespace finemoe::ops {

// out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t B,
                       int64_t T, int64_t d);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B,
                        int64_t T, int64_t d);

// LayerNorm over the last dim (eps 1e-5); saves mean and rstd [N] for backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int64_t N, int64_t d);
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int64_t N, int64_t d);

// out[N,OC] = inp[N,C] · W[C,OC] + b[OC] (b may be null)
void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C,
                    int64_t OC);
// out = max(inp · W + b, 0): the GEMM with the ReLU fused as its epilogue
// (b may be null). Bit-identical to linear_forward then relu_forward.
void linear_relu_forward(float* out, const float* inp, const float* W, const float* b, int64_t N, int64_t C,
                         int64_t OC);
// dinp may be null (no input gradient wanted); db may be null.
void linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W,
                     int64_t N, int64_t C, int64_t OC);

// Causal multi-head self-attention on packed qkv [B,T,3d] (q | k | v, heads of
// size hd = d/H contiguous inside each). out [B,T,d]. `att` saves the softmax
// probabilities [B,H,T,T] for backward. Scale 1/sqrt(hd).
void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t d, int64_t H);
// `scratch` must hold B·H·T·T floats (dpreatt).
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv, const float* att,
                        int64_t B, int64_t T, int64_t d, int64_t H);

// Attention's causal softmax, in place on R rows of length T; row r is query
// t = r % T: p[j] = exp(p[j] - max) / Σ for j <= t, exactly 0 for j > t.
// (Separate from attention_forward so that tests can build reference
// products with the same softmax.)
void causal_softmax_forward(float* att, int64_t R, int64_t T);
// In place on the dP rows: ds = scale · P ⊙ (ds - Σ_j P·ds), exactly 0 for j > t.
void causal_softmax_backward(float* ds, const float* att, int64_t R, int64_t T, float scale);
// The softmax's exp for one x <= 0 (for tests; about 2 ulp from std::exp).
float exp_nonpositive(float x);

void relu_forward(float* out, const float* inp, int64_t n);
// dinp += dout where out > 0
void relu_backward(float* dinp, const float* dout, const float* out, int64_t n);

// d = out > 0 ? d : 0, in place: ReLU backward when d already holds ∂L/∂out
// (saves the second buffer and pass of relu_backward's accumulate form).
void relu_backward_inplace(float* d, const float* out, int64_t n);

// out = a + b
void residual_forward(float* out, const float* a, const float* b, int64_t n);

// Softmax cross-entropy over V classes for N rows. Writes probs [N,V] and
// per-row losses [N] (nats); returns the mean loss. Targets outside [0,V) are
// a caller bug (checked by the data layer).
double crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int64_t N,
                            int64_t V);
// dlogits += scale · (probs - onehot(target)); scale = dL/dloss_row (1/N for a mean)
void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float scale, int64_t N,
                           int64_t V);

}  // namespace finemoe::ops
