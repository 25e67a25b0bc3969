#include "finemoe/final_eval.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace finemoe {

int64_t final_eval_sequences(const Config& cfg) {
  return std::max<int64_t>(1, (cfg.train.final_eval_tokens + cfg.model.seq_len - 1) / cfg.model.seq_len);
}

FinalEval final_evaluate(const Config& cfg, Transformer& model, const TokenSource& val, const Comm& comm,
                         int64_t step, double* per_token_sd) {
  const int64_t T = cfg.model.seq_len, S = final_eval_sequences(cfg);
  BatchLoader loader(val, cfg.train.batch_size, T, comm.rank(), comm.size());
  const int64_t B = loader.local_batch(), batch = cfg.train.batch_size;
  const int64_t first = int64_t(comm.rank()) * B;  // this rank's first sequence within a global batch
  std::vector<int32_t> tokens(size_t(B * T)), targets(size_t(B * T));
  // Batch means: the set is cut into kBlocks contiguous blocks of sequences.
  // Neighbouring sequences share a document (regime, copy spans), so neither
  // tokens nor sequences are independent; blocks of many documents nearly are.
  const int64_t nblk = std::min<int64_t>(kFinalEvalBlocks, S);
  auto block_of = [&](int64_t seq) { return seq * nblk / S; };
  std::vector<double> blk(size_t(nblk), 0.0);
  double tok_sq = 0;  // Σ loss² over this rank's tokens (per-token sd, for the log)
  std::vector<float> losses;  // host copy of each batch's per-token losses
  const int64_t batches = (S + batch - 1) / batch;
  for (int64_t k = 0; k < batches; ++k) {
    loader.load(k, tokens.data(), targets.data());
    model.evaluate(tokens.data(), targets.data(), B);
    model.token_losses(losses);
    const float* tl = losses.data();
    for (int64_t j = 0; j < B && k * batch + first + j < S; ++j) {
      double s = 0;
      for (int64_t t = 0; t < T; ++t) {
        const double l = tl[j * T + t];
        s += l;
        tok_sq += l * l;
      }
      blk[size_t(block_of(k * batch + first + j))] += s / double(T);
    }
  }
  // Comm's sums run in rank order: deterministic for a given rank count.
  std::vector<double> count(size_t(nblk), 0.0);
  for (int64_t q = 0; q < S; ++q) count[size_t(block_of(q))] += 1;
  double sum = 0;
  for (int64_t b = 0; b < nblk; ++b) {
    blk[size_t(b)] = comm.allreduce_sum(blk[size_t(b)], Group::world);
    sum += blk[size_t(b)];
  }
  tok_sq = comm.allreduce_sum(tok_sq, Group::world);
  FinalEval fe;
  fe.step = step;
  fe.tokens = S * T;
  fe.loss = sum / double(S);
  double var = 0;
  for (int64_t b = 0; b < nblk; ++b) {
    const double d = blk[size_t(b)] / count[size_t(b)] - fe.loss;
    var += d * d;
  }
  fe.stderr_loss = nblk > 1 ? std::sqrt(var / double(nblk - 1) / double(nblk)) : std::nan("");
  if (per_token_sd) {
    const double n = double(S * T);
    *per_token_sd = std::sqrt(std::max(0.0, (tok_sq - n * fe.loss * fe.loss) / (n - 1)));
  }
  return fe;
}

}  // namespace finemoe
