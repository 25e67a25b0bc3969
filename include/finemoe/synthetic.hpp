// The embedded synthetic corpus: a hidden-state language with a known entropy rate.
//
// The stream is a sequence of independent documents of data.synth_doc_len
// tokens. Document g of stream s is generated from its own counter-based Rng
// (seed → split(1 + s) → split(g)), so read(pos, n) generates only the
// documents it touches and any rank or restart gets the same tokens.
// Inside a document, token t is produced by
//   1. a regime (topic) r_t: uniform at t = 0, then stays with probability
//      data.synth_regime_stay, else jumps to one of the other regimes uniformly;
//   2. a copy state c_t ∈ {none, 1..D}: from none a copy starts with
//      probability data.synth_copy_prob at an offset d uniform in 1..min(D, t);
//      a copy continues with probability 1 - 1/data.synth_copy_len;
//   3. the emission: copying with offset d → x_t = x_{t-d}; otherwise one of B =
//      data.synth_branching successor slots is drawn with Zipfian weights
//      (i+1)^-zipf and slot i's successor is a fixed hash of (r_t, the last k_i
//      tokens, i) mapped through a Zipfian unigram over the vocabulary, with
//      k_i = ceil((i+1)·order/B): the heavy slots follow short contexts, the
//      light ones the full order-k context (structure at several scales).
// Regime and copy state are hidden; the entropy rate is estimated by an exact
// forward filter over them (see docs/data.md).
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "finemoe/config.hpp"
#include "finemoe/data.hpp"

namespace finemoe {

// Defaults are the config schema's (config.hpp), so there is one set of them.
struct SynthParams {
  int64_t vocab = ModelConfig{}.vocab_size;
  uint64_t seed = DataConfig{}.seed;
  int64_t regimes = DataConfig{}.synth_regimes;
  double regime_stay = DataConfig{}.synth_regime_stay;
  int64_t order = DataConfig{}.synth_order;
  double zipf = DataConfig{}.synth_zipf;
  double copy_prob = DataConfig{}.synth_copy_prob;
  int64_t branching = DataConfig{}.synth_branching;
  int64_t doc_len = DataConfig{}.synth_doc_len;
  int64_t copy_distance = DataConfig{}.synth_copy_distance;
  double copy_len = DataConfig{}.synth_copy_len;
  static SynthParams from_config(const Config& cfg);
};

// Stream ids: train and validation are disjoint document sets of the same process.
constexpr uint64_t kSynthTrainStream = 0;
constexpr uint64_t kSynthValStream = 1;
constexpr uint64_t kSynthEntropyStream = 2;  // documents used for the entropy estimate

struct EntropyEstimate {
  double mean = 0;     // nats/token
  double stderr_ = 0;  // standard error of the mean (documents are i.i.d.)
  int64_t docs = 0, tokens = 0;
};

class SyntheticCorpus : public TokenSource {
 public:
  SyntheticCorpus(const SynthParams& p, uint64_t stream);
  void read(int64_t pos, int64_t n, int32_t* out) const override;
  int64_t vocab_size() const override { return p_.vocab; }
  std::string describe() const override;
  // Cached estimate on kSynthEntropyStream (default_entropy_docs() documents).
  double entropy_rate(double* stderr_out = nullptr) const override;

  const SynthParams& params() const { return p_; }
  // Document `doc` of `stream` (doc_len tokens) into out.
  void generate_doc(uint64_t stream, int64_t doc, int32_t* out) const;
  // out[t] = log p(x_t | x_0..x_{t-1}) of a document prefix under the exact
  // forward filter over the hidden (regime, copy offset) state.
  void filter_log_probs(const int32_t* x, int64_t len, double* out) const;
  // Mean of -log p(x_t | x_<t) over documents [first_doc, first_doc + n_docs) of `stream`.
  EntropyEstimate estimate_entropy(uint64_t stream, int64_t first_doc, int64_t n_docs) const;
  int64_t default_entropy_docs() const;

  // The process's effective probabilities (after 2^-32 quantisation of the
  // uniform draws), for tests that recompute it independently.
  double p_stay() const { return double(stay_thr_) * 0x1.0p-32; }
  double p_copy() const { return double(copy_thr_) * 0x1.0p-32; }
  double p_continue() const { return double(cont_thr_) * 0x1.0p-32; }
  const std::vector<double>& slot_weights() const { return slot_w_; }
  // Markov emission distribution of regime r; ctx[j] = x_{t-1-j} (j < order),
  // pad = vocab for positions before the document start. Sorted by token.
  std::vector<std::pair<int32_t, double>> successor_probs(int64_t regime, const int32_t* ctx) const;
  // Zipfian unigram over the vocabulary that successors are drawn from.
  double unigram_prob(int32_t v) const { return unigram_[size_t(v)]; }

 private:
  uint64_t ctx_hash(int64_t r, const int32_t* recent_first, int k) const;
  int32_t successor(uint64_t ctx_h, int64_t slot) const;
  int32_t markov_emit(int64_t r, const int32_t* x, int64_t t, int64_t slot) const;

  SynthParams p_;
  uint64_t stream_;
  uint64_t instance_;  // identifies this object in the thread-local document cache
  uint64_t rule_seed_;
  std::vector<uint64_t> regime_h_;  // hash of each regime, start of every context hash
  uint64_t stay_thr_, copy_thr_, cont_thr_;
  std::vector<uint64_t> slot_thr_;  // cumulative, last = 2^32
  std::vector<double> slot_w_;
  std::vector<int> slot_k_;         // context length of each slot
  std::vector<uint32_t> alias_thr_;
  std::vector<int32_t> alias_;
  std::vector<double> unigram_;
  mutable std::mutex entropy_mu_;
  mutable double entropy_ = -1, entropy_se_ = 0;
};

}  // namespace finemoe
