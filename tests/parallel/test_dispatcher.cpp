// Expert parallelism through the all-to-all dispatcher (run with 2 and 4 MPI
// ranks, EP = world size).
//
// Every rank builds the same GLOBAL problem (tokens of all ranks, weights of
// all experts) from one seed, then runs the MoE layer on its token slice with
// its expert slice. The reference is the single-rank layer (LocalDispatcher)
// computed redundantly on every rank. Tolerance for "same": |a−b| ≤ 1e-5·(1+|b|)
// (fp32; the only difference allowed is the order of the router-gradient sum
// over ranks). Collectives come before any ASSERT so a failure cannot hang.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>

#include "../moe/moe_ref.hpp"
#include "finemoe/comm_mpi.hpp"
#include "finemoe/dispatcher_mpi.hpp"
#include "finemoe/moe.hpp"

using namespace finemoe;
using namespace moetest;

namespace {

int world_size() {
  MpiComm c(1);
  return c.size();
}

// One rank's share of a global problem.
struct Slice {
  MoEShape s;  // with ep_size/ep_rank set
  int64_t T = 0, t0 = 0, K = 0, k0 = 0;
  std::vector<float> x, w1, w2, dout;
};

Slice slice_of(const Problem& g, int64_t P, int64_t r) {
  Slice sl;
  sl.s = g.s;
  sl.s.ep_size = P;
  sl.s.ep_rank = r;
  const int64_t d = g.s.d_model, de = g.s.d_expert;
  sl.T = g.T / P;
  sl.t0 = r * sl.T;
  sl.K = g.s.n_experts / P;
  sl.k0 = r * sl.K;
  sl.x.assign(g.x.begin() + sl.t0 * d, g.x.begin() + (sl.t0 + sl.T) * d);
  sl.dout.assign(g.dout.begin() + sl.t0 * d, g.dout.begin() + (sl.t0 + sl.T) * d);
  sl.w1.assign(g.w1.begin() + sl.k0 * d * de, g.w1.begin() + (sl.k0 + sl.K) * d * de);
  sl.w2.assign(g.w2.begin() + sl.k0 * de * d, g.w2.begin() + (sl.k0 + sl.K) * de * d);
  return sl;
}

struct Result {
  std::vector<float> out, dx, gwr, gw1, gw2;
  RoutingStats stats;
  int64_t bytes = 0;
  double aux = 0;  // aux_loss() of the slice's tokens
};

// Forward + backward of the layer on one rank's slice, through `disp`. The
// auxiliary losses (if the shape has them) enter with weight aux_scale, as
// the trainer's local/global token share.
Result run_slice(const Slice& sl, const std::vector<float>& wr, Dispatcher& disp, const float* bias = nullptr,
                 double aux_scale = 1.0) {
  MoELayer layer(sl.s, disp);
  Result r;
  const MoEWeights w{wr.data(), sl.w1.data(), sl.w2.data(), bias};
  r.out.assign(sl.x.size(), 0.0f);
  r.dx.assign(sl.x.size(), 0.0f);
  r.gwr.assign(wr.size(), 0.0f);
  r.gw1.assign(sl.w1.size(), 0.0f);
  r.gw2.assign(sl.w2.size(), 0.0f);
  layer.forward(sl.x.data(), r.out.data(), sl.T, w);
  r.aux = layer.aux_loss();
  layer.backward(sl.dout.data(), r.dx.data(), w, MoEGrads{r.gwr.data(), r.gw1.data(), r.gw2.data()}, aux_scale);
  r.stats = layer.stats();
  r.bytes = disp.last_bytes_sent();
  return r;
}

// Single-rank reference: the whole global batch with all experts.
Result run_reference(const Problem& g, const float* bias = nullptr) {
  Slice whole = slice_of(g, 1, 0);
  auto disp = make_local_dispatcher();
  return run_slice(whole, g.wr, *disp, bias);
}

// |a - b| ≤ rtol·(1 + |b|) over a range; returns the largest |a-b|/(1+|b|).
double max_rel(const float* a, const float* b, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(double(a[i]) - b[i]) / (1.0 + std::abs(b[i])));
  return worst;
}

struct Case {
  Routing routing;
  int64_t G;
  double cf;
  bool aux = false;  // balance loss (token choice), z-loss, selection bias (token choice)
};

class ExpertParallel : public testing::TestWithParam<Case> {};

// One EP group's share of the check: the group's ranks together against one
// rank holding all of the group's tokens and all experts. With EP < world
// (EP × DP), each DP replica checks its own problem (seeded by dp rank).
//
// With `aux`: every rank's aux losses enter with weight T_local/T (the
// trainer's loss_scale), so the router gradients summed over ranks equal the
// one-rank gradient of the global aux loss, the token-weighted aux values sum
// to the one-rank value, and the selection counts summed over ranks give
// every rank the same bias update as one rank holding all tokens.
void check_against_one_rank(const Comm& comm, Routing routing, int64_t G, double cf, bool aux = false) {
  const int64_t P = comm.ep_size(), me = comm.ep_rank();
  const int64_t d = 8, E = 4, T_local = 32;
  MoEShape s = make_shape(d, E, G, routing, /*group=*/16, cf);
  std::vector<float> bias_v(size_t(s.n_experts), 0.0f);
  const float* bias = nullptr;
  if (aux) {
    s.z_loss = 0.02;
    if (routing == Routing::token_choice) {
      s.balance_loss = 0.3;
      for (size_t e = 0; e < bias_v.size(); ++e) bias_v[e] = 0.03f * float(int(e * 5 % 7) - 3);
      bias = bias_v.data();
    }
  }
  const double share = 1.0 / double(P);  // T_local / T of this EP group's problem
  Problem g = make_problem(s, P * T_local, 500 + uint64_t(G) + 1000 * uint64_t(comm.dp_rank()), 2.0);
  Slice sl = slice_of(g, P, me);

  auto disp = make_dispatcher(comm);
  ASSERT_NE(dynamic_cast<AllToAllDispatcher*>(disp.get()), nullptr);
  Result dist = run_slice(sl, g.wr, *disp, bias, share);
  if (aux) {
    // Selection loads summed over the group, then the bias update: the same
    // on every rank (compared bitwise through the sum of all ranks' copies)
    // and equal to one rank's update from all tokens.
    std::vector<int64_t> load = dist.stats.selected_per_expert;
    comm.allreduce_sum(load.data(), int64_t(load.size()), Group::ep);
    std::vector<float> updated = bias_v;
    update_selection_bias(updated.data(), load.data(), s.n_experts, 0.01);
    const Result whole = run_reference(g, bias);
    EXPECT_EQ(load, whole.stats.selected_per_expert);
    std::vector<float> ref_updated = bias_v;
    update_selection_bias(ref_updated.data(), whole.stats.selected_per_expert.data(), s.n_experts, 0.01);
    for (size_t e = 0; e < updated.size(); ++e) {
      EXPECT_EQ(updated[e], ref_updated[e]) << "expert " << e;
      const double hi = comm.allreduce_max(double(updated[e]), Group::ep);
      const double lo = -comm.allreduce_max(-double(updated[e]), Group::ep);
      EXPECT_EQ(hi, lo) << "ranks disagree on the bias of expert " << e;
    }
    int64_t moved = 0;
    for (size_t e = 0; e < updated.size(); ++e) moved += updated[e] != bias_v[e];
    if (routing == Routing::token_choice) EXPECT_GT(moved, 0) << "the update must do something";
    // Token-weighted aux values: the one-rank value up to the fp32 router
    // logits' reassociation (other GEMM shapes per rank, ~1e-7 relative).
    const double aux_sum = comm.allreduce_sum(dist.aux * share, Group::ep);
    EXPECT_NEAR(aux_sum, whole.aux, 1e-6 * whole.aux);
    EXPECT_GT(whole.aux, 0.0);
  }
  std::vector<float> gwr_sum = dist.gwr;
  comm.allreduce_sum(gwr_sum.data(), int64_t(gwr_sum.size()), Group::ep);

  // Bytes: rows this rank sends to other ranks and receives back, both ways, plus counts.
  std::vector<int64_t> M(size_t(P * P), 0);  // M[src·P + dst] rows
  for (int64_t e = 0; e < s.n_experts; ++e) M[size_t(me * P + e / sl.K)] += dist.stats.tokens_per_expert[size_t(e)];
  comm.allreduce_sum(M.data(), int64_t(M.size()), Group::ep);
  int64_t rows_off = 0;
  for (int64_t q = 0; q < P; ++q)
    if (q != me) rows_off += M[size_t(me * P + q)] + M[size_t(q * P + me)];
  EXPECT_EQ(dist.bytes, rows_off * d * 4 + (P - 1) * sl.K * 8);

  const double rtol = 1e-5;
  if (cf <= 2.0 && routing == Routing::token_choice) {
    // Token-choice capacity is per rank's tokens, so with drops the reference
    // is every rank routing its own tokens over ALL experts on one rank; the
    // expert gradient then sums over those per-rank references.
    std::vector<float> ref_gw1(g.w1.size(), 0.0f), ref_gw2(g.w2.size(), 0.0f), ref_gwr(g.wr.size(), 0.0f);
    Result mine;
    int64_t dropped_any = 0;
    for (int64_t r = 0; r < P; ++r) {
      Slice tok = slice_of(g, P, r);
      tok.s.ep_size = 1;
      tok.s.ep_rank = 0;
      tok.w1 = g.w1;
      tok.w2 = g.w2;
      auto local = make_local_dispatcher();
      Result rr = run_slice(tok, g.wr, *local, bias, share);
      for (size_t i = 0; i < ref_gw1.size(); ++i) ref_gw1[i] += rr.gw1[i];
      for (size_t i = 0; i < ref_gw2.size(); ++i) ref_gw2[i] += rr.gw2[i];
      for (size_t i = 0; i < ref_gwr.size(); ++i) ref_gwr[i] += rr.gwr[i];
      dropped_any += rr.stats.unserved_fraction > 0;
      if (r == me) mine = rr;
    }
    EXPECT_GT(dropped_any, 0) << "case should exercise drops";
    const double e_out = max_rel(dist.out.data(), mine.out.data(), dist.out.size());
    const double e_dx = max_rel(dist.dx.data(), mine.dx.data(), dist.dx.size());
    const double e_wr = max_rel(gwr_sum.data(), ref_gwr.data(), gwr_sum.size());
    const double e_w1 = max_rel(dist.gw1.data(), ref_gw1.data() + sl.k0 * d * s.d_expert, dist.gw1.size());
    const double e_w2 = max_rel(dist.gw2.data(), ref_gw2.data() + sl.k0 * s.d_expert * d, dist.gw2.size());
    if (me == 0)
      std::printf("  EP=%ld (per-rank reference) max rel diff: out %.1e dx %.1e dWr %.1e dW1 %.1e dW2 %.1e\n", long(P),
                  e_out, e_dx, e_wr, e_w1, e_w2);
    EXPECT_LE(e_out, rtol);
    EXPECT_LE(e_dx, rtol);
    EXPECT_LE(e_wr, rtol);
    EXPECT_LE(e_w1, rtol);
    EXPECT_LE(e_w2, rtol);
    return;
  }

  Result ref = run_reference(g, bias);
  const int64_t de = s.d_expert;
  const double e_out = max_rel(dist.out.data(), ref.out.data() + sl.t0 * d, dist.out.size());
  const double e_dx = max_rel(dist.dx.data(), ref.dx.data() + sl.t0 * d, dist.dx.size());
  const double e_wr = max_rel(gwr_sum.data(), ref.gwr.data(), gwr_sum.size());
  const double e_w1 = max_rel(dist.gw1.data(), ref.gw1.data() + sl.k0 * d * de, dist.gw1.size());
  const double e_w2 = max_rel(dist.gw2.data(), ref.gw2.data() + sl.k0 * de * d, dist.gw2.size());
  if (me == 0)
    std::printf("  EP=%ld max rel diff vs 1 rank: out %.1e dx %.1e dWr(sum) %.1e dW1 %.1e dW2 %.1e; bytes sent %ld\n",
                long(P), e_out, e_dx, e_wr, e_w1, e_w2, long(dist.bytes));
  EXPECT_LE(e_out, rtol);
  EXPECT_LE(e_dx, rtol);
  EXPECT_LE(e_wr, rtol);
  EXPECT_LE(e_w1, rtol);
  EXPECT_LE(e_w2, rtol);
  if (routing == Routing::token_choice) {
    EXPECT_EQ(dist.stats.unserved_fraction, 0.0);
    EXPECT_DOUBLE_EQ(dist.stats.mean_experts_per_token, double(G));
  } else {
    EXPECT_DOUBLE_EQ(dist.stats.mean_experts_per_token, double(G));
  }
}

TEST_P(ExpertParallel, MatchesOneRankWithAllExperts) {
  const auto [routing, G, cf, aux] = GetParam();
  MpiComm comm(world_size());  // EP = world
  check_against_one_rank(comm, routing, G, cf, aux);
}

// EP = 2 inside a 4-rank world (2 DP replicas): the dispatcher must stay
// inside its EP sub-communicator.
TEST_P(ExpertParallel, MatchesOneRankInsideEPxDPGrid) {
  const auto [routing, G, cf, aux] = GetParam();
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  MpiComm comm(2);
  ASSERT_EQ(comm.dp_size(), 2);
  check_against_one_rank(comm, routing, G, cf, aux);
}

TEST_P(ExpertParallel, SameRunTwiceIsBitIdentical) {
  const auto [routing, G, cf, aux] = GetParam();
  (void)aux;
  MpiComm comm(world_size());
  MoEShape s = make_shape(8, 4, G, routing, 16, cf);
  Problem g = make_problem(s, comm.ep_size() * 32, 900 + uint64_t(G), 2.0);
  Slice sl = slice_of(g, comm.ep_size(), comm.ep_rank());
  auto d1 = make_dispatcher(comm);
  auto d2 = make_dispatcher(comm);
  Result a = run_slice(sl, g.wr, *d1);
  Result b = run_slice(sl, g.wr, *d2);
  comm.allreduce_sum(a.gwr.data(), int64_t(a.gwr.size()), Group::ep);
  comm.allreduce_sum(b.gwr.data(), int64_t(b.gwr.size()), Group::ep);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.dx, b.dx);
  EXPECT_EQ(a.gwr, b.gwr);
  EXPECT_EQ(a.gw1, b.gw1);
  EXPECT_EQ(a.gw2, b.gw2);
  EXPECT_EQ(a.bytes, b.bytes);
}

std::string case_name(const testing::TestParamInfo<Case>& info) {
  return std::string(info.param.routing == Routing::expert_choice ? "ExpertChoice" : "TokenChoice") + "_G" +
         std::to_string(info.param.G) + (info.param.cf > 2.0 ? "_NoDrops" : "") + (info.param.aux ? "_Aux" : "");
}
void PrintTo(const Case& c, std::ostream* os) {
  *os << (c.routing == Routing::expert_choice ? "expert_choice" : "token_choice") << " G=" << c.G
      << " cf=" << c.cf << (c.aux ? " with balance loss, z-loss, selection bias" : "");
}

INSTANTIATE_TEST_SUITE_P(Routings, ExpertParallel,
                         testing::Values(Case{Routing::expert_choice, 1, 1.0}, Case{Routing::expert_choice, 4, 1.0},
                                         Case{Routing::token_choice, 1, 1.0}, Case{Routing::token_choice, 4, 1.0},
                                         Case{Routing::token_choice, 1, 16.0},
                                         Case{Routing::token_choice, 4, 16.0},
                                         Case{Routing::token_choice, 4, 1.0, true},
                                         Case{Routing::token_choice, 2, 16.0, true},
                                         Case{Routing::expert_choice, 4, 1.0, true}),
                         case_name);

// Finite differences of the GLOBAL loss Σ_ranks Σ out·dout through the
// distributed dispatcher, against the backward's gradients (router summed
// over ranks, expert and x gradients gathered from their owners). Probes
// whose ±h crosses a routing or ReLU boundary on any rank are skipped, as in
// tests/moe/test_gradcheck.cpp.
TEST(ExpertParallelGrad, FiniteDifferencesThroughAllToAll) {
  for (Routing routing : {Routing::expert_choice, Routing::token_choice}) {
    MpiComm comm(world_size());
    const int64_t P = comm.ep_size(), me = comm.ep_rank();
    const int64_t d = 8, E = 4, G = 2, T_local = 32;
    MoEShape s = make_shape(d, E, G, routing, 16, 1.0);
    Problem g = make_problem(s, P * T_local, 77, 2.0);
    auto disp = make_dispatcher(comm);

    auto global_loss = [&](std::vector<uint8_t>* sig) {
      Slice sl = slice_of(g, P, me);
      MoELayer layer(sl.s, *disp);
      std::vector<float> out(sl.x.size());
      layer.forward(sl.x.data(), out.data(), sl.T, MoEWeights{g.wr.data(), sl.w1.data(), sl.w2.data()});
      if (sig) {  // this rank's routing: its own tokens over all experts
        RefResult rr = ref_forward(s, sl.T, sl.x.data(), g.wr.data(), g.w1.data(), g.w2.data());
        *sig = rr.signature;
      }
      return comm.allreduce_sum(dot_loss(out, sl.dout), Group::ep);
    };

    // Analytic gradients of the global loss, assembled as global tensors.
    Slice sl = slice_of(g, P, me);
    Result an = run_slice(sl, g.wr, *disp);
    std::vector<float> gx(g.x.size(), 0.0f), gw1(g.w1.size(), 0.0f), gw2(g.w2.size(), 0.0f);
    std::copy(an.dx.begin(), an.dx.end(), gx.begin() + sl.t0 * d);
    std::copy(an.gw1.begin(), an.gw1.end(), gw1.begin() + sl.k0 * d * s.d_expert);
    std::copy(an.gw2.begin(), an.gw2.end(), gw2.begin() + sl.k0 * s.d_expert * d);
    for (auto* v : {&gx, &gw1, &gw2, &an.gwr}) comm.allreduce_sum(v->data(), int64_t(v->size()), Group::ep);

    std::vector<uint8_t> base_sig;
    global_loss(&base_sig);
    const float h = 3e-3f;
    struct Tensor {
      const char* name;
      std::vector<float>* v;
      const std::vector<float>* grad;
    } tensors[] = {{"x", &g.x, &gx}, {"router", &g.wr, &an.gwr}, {"w1", &g.w1, &gw1}, {"w2", &g.w2, &gw2}};
    Rng pick(5);
    for (const Tensor& tn : tensors) {
      int valid = 0, skipped = 0;
      double worst = 0;
      const int probes = 12;
      for (int n = 0; n < probes; ++n) {
        const size_t i = size_t(pick.next_u64() % tn.v->size());  // same on every rank
        const float orig = (*tn.v)[i];
        double L[2];
        bool same = true;
        for (int side = 0; side < 2; ++side) {
          (*tn.v)[i] = orig + (side ? -h : h);
          std::vector<uint8_t> sig;
          L[side] = global_loss(&sig);
          same = same && sig == base_sig;
        }
        (*tn.v)[i] = orig;
        if (comm.any(!same)) {
          ++skipped;
          continue;
        }
        ++valid;
        const double fd = (L[0] - L[1]) / (2.0 * h), a = (*tn.grad)[i];
        const double err = std::abs(fd - a) / (std::abs(a) + 1e-2);
        worst = std::max(worst, err);
        EXPECT_LT(err, 1e-2) << tn.name << "[" << i << "] fd " << fd << " vs backward " << a;
      }
      if (me == 0)
        std::printf("  %s %-6s %d valid, %d skipped, worst rel err %.2e\n",
                    routing == Routing::expert_choice ? "EC" : "TC", tn.name, valid, skipped, worst);
      EXPECT_GE(valid, probes * 2 / 3) << tn.name;
    }
  }
}

// The token-level calls (permute + exchange) against their definition: a
// gather of x's rows by `tok` followed by the row-level dispatch, and back.
// On one EP rank the local dispatcher must also move nothing: dispatch_rows
// and output_rows hand back the caller's rows, combine_rows leaves them.
TEST(TokenLevelDispatch, EqualsGatherThenRowExchangeAndLocalCopiesNothing) {
  MpiComm comm(world_size());
  const int64_t d = 5, T = 7, EG = 2 * comm.ep_size();
  std::vector<float> x(size_t(T * d));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(comm.rank() * 1000 + int(i));
  // Expert e takes tokens (e + j) % T for j <= e % 3: ragged counts, repeats allowed.
  std::vector<int64_t> counts(static_cast<size_t>(EG)), tok;
  for (int64_t e = 0; e < EG; ++e) {
    counts[size_t(e)] = e % 3 + 1;
    for (int64_t j = 0; j <= e % 3; ++j) tok.push_back((e + j) % T);
  }
  const int64_t A = int64_t(tok.size());
  std::vector<float> gathered(size_t(A * d));
  for (int64_t i = 0; i < A; ++i)
    for (int64_t j = 0; j < d; ++j) gathered[size_t(i * d + j)] = x[size_t(tok[size_t(i)] * d + j)];

  auto disp = make_dispatcher(comm);
  auto ref = make_dispatcher(comm);
  DeviceBuffer<float> ref_recv{cpu_backend()};  // the CPU backend's memory is the host's
  std::vector<int64_t> ref_counts, counts_out;
  ref->dispatch(gathered.data(), counts, d, ref_recv, ref_counts);
  const float* xin = disp->dispatch_tokens(cpu_backend(), x.data(), tok.data(), counts, d, counts_out);
  ASSERT_EQ(counts_out, ref_counts);
  int64_t R = 0;
  for (int64_t c : counts_out) R += c;
  for (int64_t i = 0; i < R * d; ++i) ASSERT_EQ(xin[i], ref_recv.data()[i]) << "row element " << i;

  // Experts' "output": the input rows plus one; back to the send layout.
  std::vector<float> y_send(size_t(A * d), -1.0f);
  float* yout = disp->output_rows(y_send.data(), R, d);
  for (int64_t i = 0; i < R * d; ++i) yout[i] = xin[i] + 1.0f;
  disp->combine_rows(cpu_backend(), yout, d, y_send.data());
  for (int64_t i = 0; i < A * d; ++i) ASSERT_EQ(y_send[size_t(i)], gathered[size_t(i)] + 1.0f) << i;

  // Backward direction: send-layout rows to the experts, like dispatch().
  const float* dyin = disp->dispatch_rows(cpu_backend(), gathered.data(), counts, d, counts_out);
  for (int64_t i = 0; i < R * d; ++i) ASSERT_EQ(dyin[i], ref_recv.data()[i]);

  EXPECT_EQ(disp->rows_stay_on_rank(), comm.ep_size() == 1);
  if (comm.ep_size() == 1) {
    EXPECT_EQ(dyin, gathered.data()) << "the local dispatcher copied the rows";
    EXPECT_EQ(yout, y_send.data()) << "the local dispatcher gave the experts another output buffer";
  }
}

TEST(ExpertParallelGrad, FactoryGivesLocalDispatcherForEP1) {
  MpiComm comm(1);
  auto disp = make_dispatcher(comm);
  EXPECT_EQ(dynamic_cast<AllToAllDispatcher*>(disp.get()), nullptr);
  EXPECT_EQ(disp->last_bytes_sent(), 0);
}

}  // namespace

int main(int argc, char** argv) {
  Comm::init(&argc, &argv);
  testing::InitGoogleTest(&argc, argv);
  int rc = 0;
  {
    MpiComm world(1);
    rc = RUN_ALL_TESTS();
    rc = int(world.allreduce_max(double(rc), Group::world));  // every rank exits with the same verdict
  }
  Comm::finalize();
  return rc;
}
