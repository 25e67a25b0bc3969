// A tiny model memorises a short repeated sequence: loss must fall far below
// its initial value ln(V). Exercises model + backward + AdamW + schedule
// together without the data layer.
#include <gtest/gtest.h>

#include <cmath>

#include "finemoe/comm_mpi.hpp"
#include "finemoe/model.hpp"
#include "finemoe/optimizer.hpp"

using namespace finemoe;

namespace {
double overfit(Config cfg, int steps) {
  MpiComm comm(1);
  ParamStore store;
  declare_parameters(cfg, store);
  store.finalize(cpu_backend());
  init_parameters(cfg, store, 7);
  auto disp = make_local_dispatcher();
  Transformer model(cfg, store, *disp);
  const int64_t B = cfg.train.batch_size, T = cfg.model.seq_len;
  std::vector<int32_t> tok(size_t(B * T + 1));
  for (size_t i = 0; i < tok.size(); ++i) tok[i] = int32_t((i * 7 + (i / 5) * 3) % 23);  // period-115 pattern
  std::vector<int32_t> x(tok.begin(), tok.end() - 1), y(tok.begin() + 1, tok.end());
  AdamWParams hp{3e-3, 0.9, 0.95, 1e-8, 0.0};
  double loss = 0;
  for (int s = 0; s < steps; ++s) {
    store.zero_grads();
    loss = model.forward(x.data(), y.data(), B);
    if (s == 0) EXPECT_NEAR(loss, std::log(double(cfg.model.vocab_size)), 0.3);
    model.backward(1.0);
    hp.lr = lr_at(s, steps, steps / 10, 3e-3, 3e-4);
    adamw_update(store, hp, s + 1);
  }
  return loss;
}
}  // namespace

TEST(Overfit, DenseMemorisesRepeatedSequence) {
  Config c;
  c.model.ffn = Ffn::dense;
  c.model.d_model = 64;
  c.model.n_blocks = 2;
  c.model.seq_len = 32;
  c.model.vocab_size = 32;
  c.train.batch_size = 4;
  const double loss = overfit(c, 150);
  EXPECT_LT(loss, 0.2) << "ln(32) = 3.47 at init";
}

TEST(Overfit, MoEMemorisesRepeatedSequence) {
  Config c;
  c.model.d_model = 64;
  c.model.n_blocks = 2;
  c.model.seq_len = 32;
  c.model.vocab_size = 32;
  c.moe.experts = 4;
  c.moe.granularity = 2;
  c.moe.group_size = 64;
  c.train.batch_size = 4;
  const double loss = overfit(c, 150);
  EXPECT_LT(loss, 0.2);
}

int main(int argc, char** argv) {
  Comm::init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  Comm::finalize();
  return rc;
}
