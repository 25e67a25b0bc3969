// The end-of-run evaluation on a fixed held-out set: the number a scaling-law
// fit should use as a run's final loss (one 1024-token training batch carries
// ±0.1–0.3 nats of noise; this set is sized for a standard error < 0.005).
//
// The set is the first ceil(train.final_eval_tokens / seq_len) sequences of
// the validation stream (make_val_source): it depends only on the data config
// (synthetic: data.seed and the synth_* keys; shards: data.val_shards) and
// seq_len, never on train.seed or train.batch_size, so every run of a sweep is
// scored on the same tokens.
#pragma once
#include <cstdint>

#include "finemoe/comm.hpp"
#include "finemoe/config.hpp"
#include "finemoe/data.hpp"
#include "finemoe/metrics.hpp"
#include "finemoe/model.hpp"

namespace finemoe {

constexpr int64_t kFinalEvalBlocks = 64;

// Sequences in the set for this config (at least 1).
int64_t final_eval_sequences(const Config& cfg);

// Collective over all ranks: the set is walked in global batches of
// train.batch_size sequences (the last one padded with the following stream
// sequences, which are not counted), each rank evaluating its slice of a batch.
// Per-sequence mean losses are summed per rank in sequence order and the rank
// sums reduced in rank order, so a given rank count is reproducible.
// loss = mean over the set's tokens; stderr_loss by batch means: the set is
// cut into kFinalEvalBlocks contiguous blocks, stderr = sd(block means) /
// sqrt(blocks). Tokens of a document share its regime and copy spans, so a
// per-token (or per-sequence) standard error would be too small: on
// input/tiny.ini the per-sequence one is 2x the per-token one (measured).
FinalEval final_evaluate(const Config& cfg, Transformer& model, const TokenSource& val, const Comm& comm,
                         int64_t step, double* per_token_sd = nullptr);

}  // namespace finemoe
