// MoEShape from a Config: the one place the MoE layer's shape is derived
// (expert count and width come from counting.hpp through Config).
#include "finemoe/config.hpp"
#include "finemoe/moe.hpp"

namespace finemoe {

MoEShape moe_shape(const Config& cfg, int64_t ep_size, int64_t ep_rank) {
  MoEShape sh;
  sh.d_model = cfg.model.d_model;
  sh.E = cfg.moe.experts;
  sh.G = cfg.moe.granularity;
  sh.n_experts = cfg.n_experts();
  sh.d_expert = cfg.d_expert();
  sh.routing = cfg.routing();
  sh.group_size = cfg.moe.group_size;
  sh.capacity = cfg.expert_capacity();
  sh.capacity_factor = cfg.moe.capacity_factor;
  sh.top_k = cfg.top_k();
  sh.balance_loss = cfg.balance_loss_coef();
  sh.z_loss = cfg.moe.z_loss;
  sh.ep_size = ep_size;
  sh.ep_rank = ep_rank;
  return sh;
}

}  // namespace finemoe
