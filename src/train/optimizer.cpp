#include "finemoe/optimizer.hpp"

#include "finemoe/backend.hpp"
#include "finemoe/reduce.hpp"

#include <algorithm>
#include <cmath>

namespace finemoe {

void adamw_update(ParamStore& store, const AdamWParams& hp, int64_t t, const AdamWStepOptions& opts) {
  const double bc1 = 1.0 - std::pow(hp.beta1, double(t));
  const double bc2 = 1.0 - std::pow(hp.beta2, double(t));
  const float b1 = float(hp.beta1), b2 = float(hp.beta2), eps = float(hp.eps);
  const float lr = float(hp.lr);
  const float inv_bc1 = float(1.0 / bc1), inv_bc2 = float(1.0 / bc2);
  const float scale = opts.grad_scale;
  const bool scaled = scale != 1.0f, zero = opts.zero_grads;
  for (const ParamInfo& info : store.params()) {
    float* __restrict p = store.params(info.cls).data() + info.offset;
    float* __restrict g = store.grads(info.cls).data() + info.offset;
    float* __restrict m = store.moments_m(info.cls).data() + info.offset;
    float* __restrict v = store.moments_v(info.cls).data() + info.offset;
    const float wd = info.decay ? float(hp.weight_decay) : 0.0f;
    const int64_t n = info.local_count;
    // Branch-free body so that it vectorises (with -fno-math-errno, sqrt too).
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = scaled ? g[i] * scale : g[i];
      const float mi = b1 * m[i] + (1.0f - b1) * gi;
      const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      const float mhat = mi * inv_bc1, vhat = vi * inv_bc2;
      p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p[i]);
      if (zero) g[i] = 0.0f;
    }
  }
  backend::weights_updated();  // bf16 copies of the old weights are stale now
}

backend::RegisteredWeights register_parameters(const ParamStore& store) {
  const Buffer<float>& rep = store.params(ParamClass::replicated);
  const Buffer<float>& exp = store.params(ParamClass::expert);
  return backend::RegisteredWeights{{rep.data(), int64_t(rep.size())}, {exp.data(), int64_t(exp.size())}};
}

namespace {
double sum_squares(const Buffer<float>& b) { return deterministic_sum_squares(b.data(), int64_t(b.size())); }
}  // namespace

double global_grad_norm(const ParamStore& store, const Comm& comm) {
  // The padding between tensors in a class buffer is always zero.
  const double rep = sum_squares(store.grads(ParamClass::replicated));
  const double exp = comm.allreduce_sum(sum_squares(store.grads(ParamClass::expert)), Group::ep);
  return std::sqrt(rep + exp);
}

void scale_grads(ParamStore& store, float factor) {
  for (int c = 0; c < kNumParamClasses; ++c) {
    Buffer<float>& g = store.grads(ParamClass(c));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < int64_t(g.size()); ++i) g[i] *= factor;
  }
}

void sync_grads(ParamStore& store, const Comm& comm) {
  Buffer<float>& rep = store.grads(ParamClass::replicated);
  comm.allreduce_sum(rep.data(), int64_t(rep.size()), Group::world);
  Buffer<float>& exp = store.grads(ParamClass::expert);
  comm.allreduce_sum(exp.data(), int64_t(exp.size()), Group::dp);
}

double lr_at(int64_t step, int64_t total, int64_t warmup, double lr, double lr_min) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  const int64_t decay_steps = total - warmup;
  if (decay_steps <= 1) return lr;
  const double progress = double(step - warmup) / double(decay_steps - 1);
  const double pi = 3.14159265358979323846;
  return lr_min + 0.5 * (lr - lr_min) * (1.0 + std::cos(pi * std::min(progress, 1.0)));
}

}  // namespace finemoe
