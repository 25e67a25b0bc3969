// Small configs shared by the model tests.
#pragma once
#include <string>

#include "finemoe/config.hpp"

namespace fmtest {

// A tiny model that runs a full forward+backward in milliseconds:
// d = 32, two heads of 16, 2 blocks, T = 8, V = 23.
inline finemoe::Config tiny_config(const std::string& ffn, const std::string& routing = "expert_choice") {
  finemoe::Config c;
  c.model.d_model = 32;
  c.model.head_dim = 16;
  c.model.n_blocks = 2;
  c.model.seq_len = 8;
  c.model.vocab_size = 23;
  finemoe::set_config_value(c, "model.ffn", ffn);
  c.moe.experts = 4;
  c.moe.granularity = 2;
  c.moe.routing = finemoe::parse_routing(routing);
  c.moe.group_size = 16;      // capacity 16/4 = 4 tokens per expert per group
  c.moe.capacity_factor = 1.0;
  c.moe.top_k = 0;            // = G
  c.moe.output_norm = true;
  c.train.batch_size = 4;     // B·T = 32 tokens = 2 expert-choice groups
  return c;
}

}  // namespace fmtest
