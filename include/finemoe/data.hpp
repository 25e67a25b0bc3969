// Token streams and batches.
//
// A TokenSource is an (in effect) endless stream addressed by global position:
// read(pos, n) returns the same tokens whoever asks and in whatever order, so a
// restart needs only the token cursor and ranks never read each other's data.
//   synthetic: the embedded generative corpus (src/io/synthetic_corpus.cpp)
//   shards:    llm.c token shards (src/io/token_shards.cpp), wrapping around
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "finemoe/config.hpp"

namespace finemoe {

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // Tokens [pos, pos + n) of the stream into out (int32, values < vocab_size()).
  virtual void read(int64_t pos, int64_t n, int32_t* out) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::string describe() const = 0;
  // True entropy rate in nats/token when the source knows it (synthetic),
  // with its standard error in *stderr_out; NaN otherwise.
  virtual double entropy_rate(double* stderr_out = nullptr) const;
};

// Training and validation streams for the config (validation is disjoint:
// another synthetic seed range, or the val shards). Throws DataError naming the
// file and the problem for bad shards.
std::unique_ptr<TokenSource> make_train_source(const Config& cfg);
std::unique_ptr<TokenSource> make_val_source(const Config& cfg);

// Global batch `step` is batch_size sequences of seq_len + 1 tokens (inputs and
// shifted targets); sequence j of step s starts at stream position
// (s · batch_size + j) · seq_len. Rank r of W takes sequences
// [r·B/W, (r+1)·B/W): the union over ranks is the same for any W.
class BatchLoader {
 public:
  BatchLoader(const TokenSource& src, int64_t batch_size, int64_t seq_len, int rank, int world);
  int64_t local_batch() const { return local_b_; }
  int64_t tokens_per_step() const { return batch_ * seq_; }  // global
  // tokens, targets: [local_batch, seq_len]
  void load(int64_t step, int32_t* tokens, int32_t* targets) const;

 private:
  const TokenSource& src_;
  int64_t batch_, seq_, local_b_, first_seq_;
};

}  // namespace finemoe
