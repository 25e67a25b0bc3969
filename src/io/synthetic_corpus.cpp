// The embedded synthetic corpus (see include/finemoe/synthetic.hpp and
// docs/data.md for the process). Two halves: a fast generator (one Philox call
// and a few hash mixes per token) and an exact forward filter over the hidden
// (regime, copy offset) state that yields log p(x_t | x_<t), whose average over
// sampled documents is the entropy rate.
#include "finemoe/synthetic.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "finemoe/error.hpp"
#include "finemoe/rng.hpp"

namespace finemoe {
namespace {

constexpr double k2p32 = 4294967296.0;

inline uint64_t mix64(uint64_t z) {  // murmur3 fmix64: cheap, good avalanche
  z ^= z >> 33;
  z *= 0xff51afd7ed558ccdull;
  z ^= z >> 33;
  z *= 0xc4ceb9fe1a85ec53ull;
  z ^= z >> 33;
  return z;
}

uint64_t threshold(double p) {  // u32 < thr happens with probability thr / 2^32
  double t = std::nearbyint(std::clamp(p, 0.0, 1.0) * k2p32);
  return uint64_t(t);
}

// Four 32-bit uniforms of token t of a document: value t of the document's Rng
// (same counter layout as Rng::u64_at, but keeping all 128 Philox bits).
inline std::array<uint32_t, 4> draws(const Rng& r, uint64_t t) {
  return philox4x32({uint32_t(t), uint32_t(t >> 32), uint32_t(r.stream()), uint32_t(r.stream() >> 32)},
                    {uint32_t(r.seed()), uint32_t(r.seed() >> 32)});
}

inline uint32_t uniform_index(uint32_t u, uint64_t n) { return uint32_t((uint64_t(u) * n) >> 32); }

std::atomic<uint64_t> g_instances{1};

// One decoded document per thread: a batch of reads walks through documents in
// order, so consecutive calls mostly hit the same one.
struct DocCache {
  uint64_t instance = 0, stream = 0;
  int64_t doc = -1;
  std::vector<int32_t> buf;
};
thread_local DocCache t_cache;

}  // namespace

SynthParams SynthParams::from_config(const Config& cfg) {
  SynthParams p;
  p.vocab = cfg.model.vocab_size;
  p.seed = cfg.data.seed;
  p.regimes = cfg.data.synth_regimes;
  p.regime_stay = cfg.data.synth_regime_stay;
  p.order = cfg.data.synth_order;
  p.zipf = cfg.data.synth_zipf;
  p.copy_prob = cfg.data.synth_copy_prob;
  p.branching = cfg.data.synth_branching;
  p.doc_len = cfg.data.synth_doc_len;
  p.copy_distance = cfg.data.synth_copy_distance;
  p.copy_len = cfg.data.synth_copy_len;
  return p;
}

SyntheticCorpus::SyntheticCorpus(const SynthParams& p, uint64_t stream)
    : p_(p), stream_(stream), instance_(g_instances.fetch_add(1)) {
  if (p.vocab < 2 || p.regimes < 1 || p.order < 1 || p.order > 8 || p.branching < 1 || p.doc_len < 1 ||
      p.copy_distance < 1 || p.copy_len < 1 || !(p.copy_prob >= 0 && p.copy_prob < 1) ||
      !(p.regime_stay >= 0 && p.regime_stay <= 1) || !(p.zipf >= 0))
    throw ConfigError("synthetic corpus: invalid data.synth_* parameters (see --help for ranges)");
  rule_seed_ = Rng(p.seed, 0).split(0).u64_at(0);
  for (int64_t r = 0; r < p.regimes; ++r) regime_h_.push_back(mix64(rule_seed_ ^ (uint64_t(r + 1) * 0x9E3779B97F4A7C15ull)));
  stay_thr_ = threshold(p.regimes > 1 ? p.regime_stay : 1.0);
  copy_thr_ = threshold(p.copy_prob);
  cont_thr_ = threshold(1.0 - 1.0 / p.copy_len);

  // Successor slots: Zipfian weights, context length ceil((i+1)·order/B).
  const int64_t B = p.branching;
  std::vector<double> w(static_cast<size_t>(B));
  double tot = 0;
  for (int64_t i = 0; i < B; ++i) tot += (w[size_t(i)] = std::pow(double(i + 1), -p.zipf));
  double cum = 0;
  for (int64_t i = 0; i < B; ++i) {
    cum += w[size_t(i)] / tot;
    slot_thr_.push_back(i + 1 == B ? uint64_t(1) << 32 : threshold(cum));
    slot_k_.push_back(int(((i + 1) * p.order + B - 1) / B));
  }
  for (int64_t i = 0; i < B; ++i)
    slot_w_.push_back(double(slot_thr_[size_t(i)] - (i ? slot_thr_[size_t(i - 1)] : 0)) / k2p32);

  // Zipfian unigram over token ids (id = frequency rank) and its alias table
  // (Vose), so that mapping a hash to a token is O(1).
  const int64_t V = p.vocab;
  unigram_.resize(size_t(V));
  tot = 0;
  for (int64_t v = 0; v < V; ++v) tot += (unigram_[size_t(v)] = std::pow(double(v + 1), -p.zipf));
  std::vector<double> scaled(static_cast<size_t>(V));
  std::vector<int32_t> small, large;
  for (int64_t v = 0; v < V; ++v) {
    unigram_[size_t(v)] /= tot;
    scaled[size_t(v)] = unigram_[size_t(v)] * double(V);
    (scaled[size_t(v)] < 1.0 ? small : large).push_back(int32_t(v));
  }
  alias_thr_.assign(size_t(V), 0xFFFFFFFFu);
  alias_.resize(size_t(V));
  for (int64_t v = 0; v < V; ++v) alias_[size_t(v)] = int32_t(v);
  while (!small.empty() && !large.empty()) {
    int32_t s = small.back(), l = large.back();
    small.pop_back();
    alias_thr_[size_t(s)] = uint32_t(std::min(scaled[size_t(s)] * k2p32, 4294967295.0));
    alias_[size_t(s)] = l;
    scaled[size_t(l)] -= 1.0 - scaled[size_t(s)];
    if (scaled[size_t(l)] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
}

std::string SyntheticCorpus::describe() const {
  std::ostringstream os;
  os << "synthetic(seed=" << p_.seed << ", vocab=" << p_.vocab << ", regimes=" << p_.regimes
     << ", stay=" << p_.regime_stay << ", order=" << p_.order << ", branching=" << p_.branching
     << ", zipf=" << p_.zipf << ", copy_prob=" << p_.copy_prob << ", copy_len=" << p_.copy_len
     << ", copy_distance=" << p_.copy_distance << ", doc_len=" << p_.doc_len << ", stream="
     << (stream_ == kSynthTrainStream ? "train" : stream_ == kSynthValStream ? "val" : std::to_string(stream_)) << ")";
  return os.str();
}

// Hash of (regime, last k tokens); recent_first[j] = x_{t-1-j}.
uint64_t SyntheticCorpus::ctx_hash(int64_t r, const int32_t* recent_first, int k) const {
  uint64_t h = regime_h_[size_t(r)];
  for (int j = 0; j < k; ++j) h = mix64(h ^ (uint64_t(recent_first[j] + 1) * 0xD6E8FEB86659FD93ull));
  return h;
}

int32_t SyntheticCorpus::successor(uint64_t ctx_h, int64_t slot) const {
  uint64_t h = mix64(ctx_h + uint64_t(slot + 1) * 0xA0761D6478BD642Full);
  uint32_t col = uniform_index(uint32_t(h >> 32), uint64_t(p_.vocab));
  return uint32_t(h) < alias_thr_[col] ? int32_t(col) : alias_[col];
}

// Markov emission of slot `slot` at position t of document x (pads before 0).
int32_t SyntheticCorpus::markov_emit(int64_t r, const int32_t* x, int64_t t, int64_t slot) const {
  int32_t ctx[8];
  const int k = slot_k_[size_t(slot)];
  for (int j = 0; j < k; ++j) ctx[j] = t - 1 - j >= 0 ? x[t - 1 - j] : int32_t(p_.vocab);
  return successor(ctx_hash(r, ctx, k), slot);
}

void SyntheticCorpus::generate_doc(uint64_t stream, int64_t doc, int32_t* x) const {
  const Rng rng = Rng(p_.seed, 0).split(1 + stream).split(uint64_t(doc));
  const int64_t L = p_.doc_len, R = p_.regimes, D = p_.copy_distance, B = p_.branching;
  int64_t r = 0, c = 0;  // regime, copy offset (0 = not copying)
  // The Philox draws do not depend on the tokens: produce a chunk of them in
  // an independent loop first, then run the serial token recurrence.
  constexpr int64_t kChunk = 256;
  std::array<uint32_t, 4> chunk[kChunk];
  for (int64_t t = 0; t < L; ++t) {
    if (t % kChunk == 0)
      for (int64_t i = 0; i < std::min(kChunk, L - t); ++i) chunk[i] = draws(rng, uint64_t(t + i));
    const auto& u = chunk[t % kChunk];
    if (t == 0) {
      r = uniform_index(u[1], uint64_t(R));
    } else {
      if (u[0] >= stay_thr_) {  // jump to one of the other R-1 regimes
        int64_t o = uniform_index(u[1], uint64_t(R - 1));
        r = o >= r ? o + 1 : o;
      }
      if (c > 0) {
        if (u[2] >= cont_thr_) c = 0;
      } else if (u[2] < copy_thr_) {
        c = 1 + uniform_index(u[3], uint64_t(std::min(D, t)));
      }
    }
    if (c > 0) {
      x[t] = x[t - c];
    } else {
      int64_t slot = 0;
      while (slot + 1 < B && u[3] >= slot_thr_[size_t(slot)]) ++slot;
      x[t] = markov_emit(r, x, t, slot);
    }
  }
}

void SyntheticCorpus::read(int64_t pos, int64_t n, int32_t* out) const {
  if (pos < 0 || n < 0) throw Error("synthetic corpus: negative read position or length");
  const int64_t L = p_.doc_len;
  DocCache& cache = t_cache;
  while (n > 0) {
    const int64_t doc = pos / L, off = pos % L, take = std::min(n, L - off);
    if (off == 0 && take == L) {
      generate_doc(stream_, doc, out);  // whole document: straight into the output
    } else {
      if (cache.instance != instance_ || cache.stream != stream_ || cache.doc != doc) {
        cache.buf.resize(size_t(L));
        generate_doc(stream_, doc, cache.buf.data());
        cache.instance = instance_;
        cache.stream = stream_;
        cache.doc = doc;
      }
      std::copy_n(cache.buf.data() + off, take, out);
    }
    pos += take;
    out += take;
    n -= take;
  }
}

std::vector<std::pair<int32_t, double>> SyntheticCorpus::successor_probs(int64_t r, const int32_t* ctx) const {
  std::vector<std::pair<int32_t, double>> out;
  for (int64_t i = 0; i < p_.branching; ++i) {
    int32_t v = successor(ctx_hash(r, ctx, slot_k_[size_t(i)]), i);
    auto it = std::find_if(out.begin(), out.end(), [v](const auto& e) { return e.first == v; });
    if (it == out.end())
      out.emplace_back(v, slot_w_[size_t(i)]);
    else
      it->second += slot_w_[size_t(i)];
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Exact forward filter. State after observing x_<t: posterior over
// (regime r, copy offset c) at t-1, stored as post[r·(D+1) + c]. Each step
// applies the two independent transition kernels, then the emission
// likelihood of x_t under every state; p(x_t | x_<t) is the normaliser.
void SyntheticCorpus::filter_log_probs(const int32_t* x, int64_t len, double* out) const {
  const int64_t R = p_.regimes, D = p_.copy_distance, S = D + 1, B = p_.branching;
  const double stay = p_stay(), move = R > 1 ? (1.0 - stay) / double(R - 1) : 0.0;
  const double q = p_copy(), rho = p_continue();
  std::vector<double> post(static_cast<size_t>(R * S), 0.0), prior(static_cast<size_t>(R * S)), markov(static_cast<size_t>(R));
  std::vector<double> colsum(static_cast<size_t>(S));
  int32_t ctx[8];
  for (int64_t t = 0; t < len; ++t) {
    const int64_t Dt = std::min(D, t);
    if (t == 0) {
      std::fill(prior.begin(), prior.end(), 0.0);
      for (int64_t r = 0; r < R; ++r) prior[size_t(r * S)] = 1.0 / double(R);
    } else {
      // Regime kernel: stay, or jump uniformly to another regime.
      std::fill(colsum.begin(), colsum.end(), 0.0);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c <= Dt; ++c) colsum[size_t(c)] += post[size_t(r * S + c)];
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c <= Dt; ++c) {
          double pr = post[size_t(r * S + c)];
          prior[size_t(r * S + c)] = R > 1 ? stay * pr + move * (colsum[size_t(c)] - pr) : pr;
        }
      // Copy kernel: continue with rho or stop; from "none" start at 1..Dt.
      for (int64_t r = 0; r < R; ++r) {
        double* pr = &prior[size_t(r * S)];
        double copying = 0;
        for (int64_t c = 1; c <= Dt; ++c) copying += pr[c];
        const double none = pr[0];
        pr[0] = (1.0 - q) * none + (1.0 - rho) * copying;
        const double start = q * none / double(Dt);
        for (int64_t c = 1; c <= Dt; ++c) pr[c] = rho * pr[c] + start;
      }
    }
    // Emission likelihoods.
    for (int j = 0; j < int(p_.order); ++j) ctx[j] = t - 1 - j >= 0 ? x[t - 1 - j] : int32_t(p_.vocab);
    double p = 0;
    for (int64_t r = 0; r < R; ++r) {
      double m = 0;
      uint64_t hk[9];
      for (int k = 1; k <= int(p_.order); ++k) hk[k] = ctx_hash(r, ctx, k);
      for (int64_t i = 0; i < B; ++i)
        if (successor(hk[slot_k_[size_t(i)]], i) == x[t]) m += slot_w_[size_t(i)];
      markov[size_t(r)] = m;
      double* pr = &prior[size_t(r * S)];
      pr[0] *= m;
      for (int64_t c = 1; c <= Dt; ++c)
        if (x[t - c] != x[t]) pr[c] = 0.0;
      for (int64_t c = 0; c <= Dt; ++c) p += pr[c];
    }
    if (!(p > 0)) throw Error("synthetic corpus: token with zero probability under the filter (internal error)");
    out[t] = std::log(p);
    const double inv = 1.0 / p;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c <= Dt; ++c) post[size_t(r * S + c)] = prior[size_t(r * S + c)] * inv;
  }
}

EntropyEstimate SyntheticCorpus::estimate_entropy(uint64_t stream, int64_t first_doc, int64_t n_docs) const {
  const int64_t L = p_.doc_len;
  std::vector<double> per_doc(static_cast<size_t>(n_docs));
#pragma omp parallel
  {
    std::vector<int32_t> x(static_cast<size_t>(L));
    std::vector<double> lp(static_cast<size_t>(L));
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < n_docs; ++i) {
      generate_doc(stream, first_doc + i, x.data());
      filter_log_probs(x.data(), L, lp.data());
      double s = 0;
      for (int64_t t = 0; t < L; ++t) s -= lp[size_t(t)];
      per_doc[size_t(i)] = s / double(L);
    }
  }
  EntropyEstimate e;
  e.docs = n_docs;
  e.tokens = n_docs * L;
  double m = 0;
  for (double v : per_doc) m += v;
  m /= double(std::max<int64_t>(n_docs, 1));
  double var = 0;
  for (double v : per_doc) var += (v - m) * (v - m);
  e.mean = m;
  e.stderr_ = n_docs > 1 ? std::sqrt(var / double(n_docs - 1) / double(n_docs)) : std::numeric_limits<double>::quiet_NaN();
  return e;
}

int64_t SyntheticCorpus::default_entropy_docs() const {
  return std::max<int64_t>(64, ((int64_t(1) << 19) + p_.doc_len - 1) / p_.doc_len);
}

double SyntheticCorpus::entropy_rate(double* stderr_out) const {
  std::lock_guard<std::mutex> lock(entropy_mu_);
  if (entropy_ < 0) {
    EntropyEstimate e = estimate_entropy(kSynthEntropyStream, 0, default_entropy_docs());
    entropy_ = e.mean;
    entropy_se_ = e.stderr_;
  }
  if (stderr_out) *stderr_out = entropy_se_;
  return entropy_;
}

}  // namespace finemoe
