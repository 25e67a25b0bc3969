#include "finemoe/optimizer.hpp"

#include "finemoe/backend.hpp"

#include <algorithm>
#include <cmath>

namespace finemoe {

void adamw_update(ParamStore& store, const AdamWParams& hp, int64_t t, const AdamWStepOptions& opts, Backend& be) {
  const double bc1 = 1.0 - std::pow(hp.beta1, double(t));
  const double bc2 = 1.0 - std::pow(hp.beta2, double(t));
  Backend::AdamWArgs a;
  a.beta1 = float(hp.beta1);
  a.beta2 = float(hp.beta2);
  a.eps = float(hp.eps);
  a.lr = float(hp.lr);
  a.inv_bc1 = float(1.0 / bc1);
  a.inv_bc2 = float(1.0 / bc2);
  a.grad_scale = opts.grad_scale;
  a.zero_grads = opts.zero_grads;
  store.require_backend(be, "adamw_update");
  for (const ParamInfo& info : store.params()) {
    a.weight_decay = info.decay ? float(hp.weight_decay) : 0.0f;
    be.adamw_step(store.params(info.cls).data() + info.offset, store.grads(info.cls).data() + info.offset,
                  store.moments_m(info.cls).data() + info.offset, store.moments_v(info.cls).data() + info.offset,
                  info.local_count, a);
  }
  backend::weights_updated();  // bf16 copies of the old weights are stale now
}

backend::RegisteredWeights register_parameters(const ParamStore& store) {
  const DeviceBuffer<float>& rep = store.params(ParamClass::replicated);
  const DeviceBuffer<float>& exp = store.params(ParamClass::expert);
  return backend::RegisteredWeights{{rep.data(), rep.size()}, {exp.data(), exp.size()}};
}

double global_grad_norm(const ParamStore& store, const Comm& comm, Backend& be) {
  // The padding between tensors in a class buffer is always zero.
  store.require_backend(be, "global_grad_norm");
  const DeviceBuffer<float>& rg = store.grads(ParamClass::replicated);
  const DeviceBuffer<float>& eg = store.grads(ParamClass::expert);
  const double rep = be.sum_squares(rg.data(), rg.size());
  const double exp = comm.allreduce_sum(be.sum_squares(eg.data(), eg.size()), Group::ep);
  return std::sqrt(rep + exp);
}

void scale_grads(ParamStore& store, float factor, Backend& be) {
  store.require_backend(be, "scale_grads");
  for (int c = 0; c < kNumParamClasses; ++c) {
    DeviceBuffer<float>& g = store.grads(ParamClass(c));
    be.scale(g.data(), g.size(), factor);
  }
}

std::string first_nonfinite_grad(const ParamStore& store, Backend& be) {
  store.require_backend(be, "first_nonfinite_grad");
  for (const ParamInfo& p : store.params())
    if (be.find_nonfinite(store.grad(p.name), p.local_count) >= 0) return p.name;
  return "";
}

void sync_grads(ParamStore& store, const Comm& comm) {
  // The class buffers are in the store's backend memory: host memory on the
  // CPU backend, which is what Comm's host MPI takes today.
  DeviceBuffer<float>& rep = store.grads(ParamClass::replicated);
  comm.allreduce_sum(rep.data(), rep.size(), Group::world);
  DeviceBuffer<float>& exp = store.grads(ParamClass::expert);
  comm.allreduce_sum(exp.data(), exp.size(), Group::dp);
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
