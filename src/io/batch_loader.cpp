// Global batches from a TokenSource, and the train/validation sources of a config.
// Everything data.hpp declares lives here, in io beside the sources it builds
// (synthetic_corpus.cpp, token_shards.cpp): their base class's vtable is emitted
// with TokenSource::entropy_rate, so io cannot do without this file.
#include <cmath>
#include <limits>
#include <vector>

#include "finemoe/data.hpp"
#include "finemoe/error.hpp"
#include "finemoe/shards.hpp"
#include "finemoe/synthetic.hpp"

namespace finemoe {

double TokenSource::entropy_rate(double* stderr_out) const {
  if (stderr_out) *stderr_out = std::numeric_limits<double>::quiet_NaN();
  return std::numeric_limits<double>::quiet_NaN();
}

std::unique_ptr<TokenSource> make_train_source(const Config& cfg) {
  if (cfg.data.source == DataSource::shards)
    return std::make_unique<ShardSource>(cfg.data.train_shards, cfg.model.vocab_size);
  return std::make_unique<SyntheticCorpus>(SynthParams::from_config(cfg), kSynthTrainStream);
}

std::unique_ptr<TokenSource> make_val_source(const Config& cfg) {
  if (cfg.data.source == DataSource::shards) {
    if (cfg.data.val_shards.empty())
      throw ConfigError("data.val_shards: is required when data.source=shards (moe-data prepare writes val_*.bin)");
    return std::make_unique<ShardSource>(cfg.data.val_shards, cfg.model.vocab_size);
  }
  return std::make_unique<SyntheticCorpus>(SynthParams::from_config(cfg), kSynthValStream);
}

BatchLoader::BatchLoader(const TokenSource& src, int64_t batch_size, int64_t seq_len, int rank, int world)
    : src_(src), batch_(batch_size), seq_(seq_len) {
  if (world < 1 || rank < 0 || rank >= world || batch_size <= 0 || seq_len <= 0 || batch_size % world != 0)
    throw ConfigError("train.batch_size: " + std::to_string(batch_size) + " sequences do not split evenly over " +
                      std::to_string(world) + " ranks (rank " + std::to_string(rank) + ")");
  local_b_ = batch_size / world;
  first_seq_ = int64_t(rank) * local_b_;
}

// One contiguous read covers this rank's sequences: sequence j's S+1 tokens
// start at (step·B + j)·S, so neighbours share one token and the block is
// local_b·S + 1 tokens long.
void BatchLoader::load(int64_t step, int32_t* tokens, int32_t* targets) const {
  const int64_t start = (step * batch_ + first_seq_) * seq_;
  std::vector<int32_t> buf(static_cast<size_t>(local_b_ * seq_ + 1));
  src_.read(start, int64_t(buf.size()), buf.data());
  for (int64_t j = 0; j < local_b_; ++j)
    for (int64_t i = 0; i < seq_; ++i) {
      tokens[j * seq_ + i] = buf[size_t(j * seq_ + i)];
      targets[j * seq_ + i] = buf[size_t(j * seq_ + i + 1)];
    }
}

}  // namespace finemoe
