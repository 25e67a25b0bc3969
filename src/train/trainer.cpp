#include "finemoe/trainer.hpp"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "finemoe/backend.hpp"
#include "finemoe/checkpoint.hpp"
#include "finemoe/collective.hpp"
#include "finemoe/comm.hpp"
#include "finemoe/counting.hpp"
#include "finemoe/data.hpp"
#include "finemoe/error.hpp"
#include "finemoe/final_eval.hpp"
#include "finemoe/kernels.hpp"
#include "finemoe/log.hpp"
#include "finemoe/metrics.hpp"
#include "finemoe/model.hpp"
#include "finemoe/optimizer.hpp"
#include "finemoe/reduce.hpp"
#include "finemoe/run_lock.hpp"
#include "finemoe/signals.hpp"
#include "finemoe/trainer.hpp"
#if __has_include("finemoe/dispatcher_mpi.hpp")
#include "finemoe/dispatcher_mpi.hpp"
#define FINEMOE_HAVE_MPI_DISPATCHER 1
#endif

namespace fs = std::filesystem;

namespace finemoe {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Set-up steps that may fail on one rank alone go through this, so that no
// rank is left waiting in a collective (see collective.hpp).
template <typename F>
void collective(const Comm& comm, F&& fn) {
  run_collectively(comm, std::forward<F>(fn));
}

// Quick measured fp32 GEMM peak for MFU (a few ms at start-up).
double measure_gemm_peak_flops() {
  const int64_t n = 512;
  Buffer<float> a(n * n), b(n * n), c(n * n);
  for (int64_t i = 0; i < n * n; ++i) {
    a[i] = float((i * 7) % 13) * 0.01f;
    b[i] = float((i * 5) % 11) * 0.01f;
  }
  backend::gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm-up
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    backend::gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * double(n) * n * n / best;
}

std::vector<RoutingStats> global_routing_stats(const std::vector<RoutingStats>& local, const Comm& comm) {
  std::vector<RoutingStats> out = local;
  for (RoutingStats& s : out) {
    comm.allreduce_sum(s.tokens_per_expert.data(), int64_t(s.tokens_per_expert.size()), Group::world);
    const double tokens = comm.allreduce_sum(double(s.tokens), Group::world);
    s.unserved_fraction = comm.allreduce_sum(s.unserved_fraction * double(s.tokens), Group::world) / tokens;
    s.router_entropy = comm.allreduce_sum(s.router_entropy * double(s.tokens), Group::world) / tokens;
    s.mean_experts_per_token = comm.allreduce_sum(s.mean_experts_per_token * double(s.tokens), Group::world) / tokens;
    s.balance_loss = comm.allreduce_sum(s.balance_loss * double(s.tokens), Group::world) / tokens;
    s.z_loss = comm.allreduce_sum(s.z_loss * double(s.tokens), Group::world) / tokens;
    comm.allreduce_sum(s.selected_per_expert.data(), int64_t(s.selected_per_expert.size()), Group::world);
    s.tokens = int64_t(tokens);
  }
  return out;
}

// The GEMM set-up of a run: what train.precision and train.fp32_engine
// resolved to, and why.
struct GemmSetup {
  backend::Precision precision = backend::Precision::fp32;
  backend::Fp32Engine engine = backend::Fp32Engine::openblas;
  std::string precision_why, engine_why;
};

// Explicit requests that this process cannot honour (bf16 without native
// bf16, onednn without oneDNN) fail here, before anything is written; `auto`
// is decided later (decide_gemm_setup), once a resumed checkpoint is known.
void check_gemm_requests(const Config& cfg) {
  std::string why;
  if (cfg.train.precision != "auto") backend::resolve_precision(cfg.train.precision, &why, {});
  if (cfg.train.fp32_engine != "auto") backend::resolve_fp32_engine(cfg.train.fp32_engine, &why, {});
}

// Rank 0's decision (the caller broadcasts it). `resumed`: the GEMM set-up
// the checkpoint recorded (TrainState::precision / fp32_engine; "" unknown),
// or nullptr for a fresh run. With `auto` a resumed run reuses the
// checkpoint's choice, so that it computes exactly as the uninterrupted run
// would; an explicit request that differs is honoured with a warning.
// Changes neither the precision nor the engine of this process.
GemmSetup decide_gemm_setup(const Config& cfg, const TrainState* resumed,
                            const std::vector<backend::GemmShape>& shapes) {
  GemmSetup g;
  const std::string not_exact = "the resumed run is not bit-exact with an uninterrupted one";
  // ---- precision
  const std::string ck_prec = resumed ? resumed->precision : "";
  std::string avail;
  if (cfg.train.precision == "auto" && !ck_prec.empty() &&
      (ck_prec == "fp32" || backend::bf16_available(&avail))) {
    g.precision = ck_prec == "bf16" ? backend::Precision::bf16 : backend::Precision::fp32;
    g.precision_why = "auto: " + ck_prec + ", from the checkpoint (the choice of the run it continues)";
  } else {
    g.precision = backend::resolve_precision(cfg.train.precision, &g.precision_why, shapes);
    const std::string now = backend::precision_name(g.precision);
    if (resumed && ck_prec.empty() && cfg.train.precision == "auto")
      g.precision_why += " (the checkpoint does not record its resolved precision)";
    else if (resumed && ck_prec != now && cfg.train.precision == "auto")
      log::warn("the checkpoint's precision %s is not available here (%s): resolved auto anew to %s, so %s",
                ck_prec.c_str(), avail.c_str(), now.c_str(), not_exact.c_str());
    else if (resumed && ck_prec != now)
      log::warn("train.precision %s differs from the checkpoint's %s: %s", now.c_str(), ck_prec.c_str(),
                not_exact.c_str());
  }
  // ---- fp32 engine
  const std::string ck_eng = resumed ? resumed->fp32_engine : "";
  if (cfg.train.fp32_engine == "auto" && !ck_eng.empty() && (ck_eng == "openblas" || backend::onednn_built())) {
    g.engine = backend::fp32_engine_from_name(ck_eng);
    g.engine_why = "auto: " + ck_eng + ", from the checkpoint (the choice of the run it continues)";
  } else {
    g.engine = backend::resolve_fp32_engine(cfg.train.fp32_engine, &g.engine_why, shapes, g.precision);
    const std::string now = backend::fp32_engine_name(g.engine);
    if (resumed && !ck_eng.empty() && ck_eng != now && cfg.train.fp32_engine == "auto")
      log::warn("the checkpoint's fp32 engine %s is not in this build: resolved auto anew to %s, so %s",
                ck_eng.c_str(), now.c_str(), not_exact.c_str());
    else if (resumed && !ck_eng.empty() && ck_eng != now)
      log::warn("train.fp32_engine %s differs from the checkpoint's %s: %s", now.c_str(), ck_eng.c_str(),
                not_exact.c_str());
  }
  return g;
}

// "precision\nengine\nprecision_why\nengine_why" (the reasons are one line each).
std::string encode(const GemmSetup& g) {
  return backend::precision_name(g.precision) + "\n" + backend::fp32_engine_name(g.engine) + "\n" +
         g.precision_why + "\n" + g.engine_why;
}
GemmSetup decode(const std::string& text) {
  std::vector<std::string> f;
  size_t a = 0;
  for (size_t b; (b = text.find('\n', a)) != std::string::npos; a = b + 1) f.push_back(text.substr(a, b - a));
  f.push_back(text.substr(a));
  if (f.size() != 4) throw Error("GEMM set-up from rank 0 is malformed: '" + text + "'");
  GemmSetup g;
  g.precision = f[0] == "bf16" ? backend::Precision::bf16 : backend::Precision::fp32;
  g.engine = backend::fp32_engine_from_name(f[1]);
  g.precision_why = f[2];
  g.engine_why = f[3];
  return g;
}

std::string fmt_aux(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.5f", x);
  return buf;
}

void print_routing(int64_t step, const std::vector<RoutingStats>& stats) {
  for (size_t l = 0; l < stats.size(); ++l) {
    const auto& s = stats[l];
    if (s.tokens_per_expert.empty()) continue;
    double mn = 1e300, mx = 0, sum = 0, sq = 0;
    for (int64_t n : s.tokens_per_expert) {
      mn = std::min(mn, double(n));
      mx = std::max(mx, double(n));
      sum += double(n);
      sq += double(n) * double(n);
    }
    const double k = double(s.tokens_per_expert.size()), mean = sum / k;
    const double cv = mean > 0 ? std::sqrt(std::max(0.0, sq / k - mean * mean)) / mean : 0.0;
    log::info("  routing step %lld block %zu: tokens/expert min %.0f mean %.1f max %.0f cv %.3f | "
              "experts/token %.2f | unserved %.4f | router entropy %.3f nats | balance %.4f | z %.3f",
              (long long)step, l, mn, mean, mx, cv, s.mean_experts_per_token, s.unserved_fraction,
              s.router_entropy, s.balance_loss, s.z_loss);
  }
}

}  // namespace

TrainResult train(const Config& cfg_in) {
  Config cfg = cfg_in;
  Comm comm(int(cfg.parallel.expert_parallel));
  log::set_rank(comm.rank());
  cfg.validate(comm.size());
  // train.threads sets every pool (OpenMP's and OpenBLAS's), as moe-bench
  // does: the benchmark must measure the set-up the trainer runs.
  backend::set_num_threads(int(cfg.train.threads));

  // GEMM precision and fp32 engine: explicit requests are checked now, on
  // every rank (each must be able to run them); what `auto` means is decided
  // after the resume below, by rank 0 alone.
  collective(comm, [&] { check_gemm_requests(cfg); });

  // ---- device (run.device) ---------------------------------------------------
  // Rank 0 resolves the request and broadcasts the device it chose and why, as
  // for the GEMM set-up below, so that the ranks never run different backends;
  // every rank then takes that device's backend (a rank that cannot run it
  // fails the start-up on all ranks). cuda is refused by name in this build.
  std::string device_why;
  Backend* be_ptr = nullptr;
  {
    std::string decision;
    collective(comm, [&] {
      if (comm.rank() != 0) return;
      std::string why;
      decision = device_name(backend_for(cfg.run.device, &why).device()) + "\n" + why;
    });
    comm.broadcast(decision, 0);
    const size_t nl = decision.find('\n');
    if (nl == std::string::npos) throw Error("device choice from rank 0 is malformed: '" + decision + "'");
    device_why = decision.substr(nl + 1);
    collective(comm, [&] { be_ptr = &backend_for(decision.substr(0, nl)); });
  }
  Backend& be = *be_ptr;

  // ---- model -----------------------------------------------------------------
  // Allocation can fail on one rank alone (less memory free on its node than
  // the start-up estimate assumed): agree on it, and name the keys.
  ParamStore store(comm.ep_size(), comm.ep_rank());
  std::unique_ptr<Dispatcher> dispatcher;
  std::optional<Transformer> model_storage;
  collective(comm, [&] {
    try {
      declare_parameters(cfg, store);
      store.finalize();
      init_parameters(cfg, store, cfg.train.seed);
#ifdef FINEMOE_HAVE_MPI_DISPATCHER
      dispatcher = make_dispatcher(comm);  // keeps `comm`; talks to no rank yet
#else
      if (comm.ep_size() > 1)
        throw ConfigError("config key 'parallel.expert_parallel': this build has no MPI dispatcher");
      dispatcher = make_local_dispatcher();
#endif
    } catch (const std::bad_alloc&) {
      throw Error("out of memory allocating the model (model.d_model " + std::to_string(cfg.model.d_model) +
                  ", model.n_blocks " + std::to_string(cfg.model.n_blocks) + ", moe.experts " +
                  std::to_string(cfg.moe.experts) + ", train.batch_size " + std::to_string(cfg.train.batch_size) +
                  "): make the model or the batch smaller");
    }
  });
  collective(comm, [&] {
    try {
      model_storage.emplace(cfg, store, *dispatcher, be);
    } catch (const std::bad_alloc&) {
      throw Error("out of memory allocating the model's activations (model.d_model " +
                  std::to_string(cfg.model.d_model) + ", model.n_blocks " + std::to_string(cfg.model.n_blocks) +
                  ", train.batch_size " + std::to_string(cfg.train.batch_size) + ", model.seq_len " +
                  std::to_string(cfg.model.seq_len) + "): make the model or the batch smaller");
    }
  });
  Transformer& model = *model_storage;
  const ModelCounts counts = count_model(cfg.shape());

  // ---- data ------------------------------------------------------------------
  std::unique_ptr<TokenSource> train_src, val_src;
  collective(comm, [&] {
    train_src = make_train_source(cfg);
    val_src = make_val_source(cfg);
  });
  BatchLoader loader(*train_src, cfg.train.batch_size, cfg.model.seq_len, comm.rank(), comm.size());
  BatchLoader val_loader(*val_src, cfg.train.batch_size, cfg.model.seq_len, comm.rank(), comm.size());
  const int64_t B = loader.local_batch(), T = cfg.model.seq_len;
  const int64_t global_tokens = loader.tokens_per_step();
  std::vector<int32_t> tokens(size_t(B * T)), targets(size_t(B * T));
  double entropy_err = 0;
  const double entropy = train_src->entropy_rate(&entropy_err);

  // A stop requested during the set-up so far: nothing is written yet, so
  // exit 75 with nothing to lose (the job script requeues).
  if (comm.any(stop_requested())) {
    log::info("stop signal received during start-up: exiting with code %d before the first step, nothing written",
              int(kExitPreempted));
    TrainResult stopped;
    stopped.exit_code = kExitPreempted;
    return stopped;
  }

  // ---- run directory, resume -------------------------------------------------
  TrainState state;
  state.seed = cfg.train.seed;
  std::string resume_from;
  RunDirLock run_lock;  // held until train() returns (or the process dies)
  collective(comm, [&] {
    if (comm.rank() == 0) {
      std::error_code ec;
      fs::create_directories(fs::path(cfg.run.dir) / "checkpoints", ec);
      if (ec) throw Error("run.dir: cannot create '" + cfg.run.dir + "/checkpoints': " + ec.message());
      run_lock = RunDirLock(cfg.run.dir);  // before anything in the directory is read or written
    }
  });
  // Pruning and overwriting are limited to this run's own checkpoints (checkpoint.hpp).
  CheckpointOwnership owned;
  if (cfg.run.resume == "auto") {
    collective(comm, [&] { resume_from = resume_latest(cfg.run.dir, store, state, cfg, comm); });
  } else if (cfg.run.resume != "never") {
    resume_from = cfg.run.resume;
    collective(comm, [&] { state = load_checkpoint(resume_from, store, cfg, comm); });
  } else if (comm.rank() == 0 && !checkpoint_files(cfg.run.dir).empty()) {
    log::warn("run.resume=never: the checkpoints already in %s/checkpoints are kept (never pruned or overwritten)",
              cfg.run.dir.c_str());
  }
  if (!resume_from.empty()) {
    std::error_code ec;
    if (fs::equivalent(fs::path(resume_from).parent_path(), fs::path(cfg.run.dir) / "checkpoints", ec))
      owned.history_up_to = state.step;
  }

  // ---- GEMM precision and fp32 engine ----------------------------------------
  // Rank 0 decides and broadcasts, so that the ranks never mix precisions or
  // engines (each would otherwise time `auto` itself, and two measurements
  // can disagree). `auto` times the candidates at this model's own GEMM
  // shapes, unless a resumed checkpoint recorded the run's choice.
  GemmSetup gemm;
  {
    std::string decision;
    collective(comm, [&] {
      if (comm.rank() != 0) return;
      const int64_t local_tokens = cfg.train.batch_size / comm.size() * cfg.model.seq_len;
      decision = encode(decide_gemm_setup(cfg, resume_from.empty() ? nullptr : &state,
                                          backend::model_gemm_shapes(cfg.model.d_model, cfg.d_expert(), local_tokens)));
    });
    comm.broadcast(decision, 0);
    collective(comm, [&] {
      gemm = decode(decision);
      backend::set_precision(gemm.precision);
      backend::set_fp32_engine(gemm.engine);
    });
    // What every rank now runs, read back from its backend: identical, or no
    // rank starts (every rank sees the same list, so all throw together).
    const std::vector<std::string> ranks_setup = comm.allgather(
        backend::precision_name(backend::precision()) + " " + backend::fp32_engine_name(backend::fp32_engine()));
    for (size_t r = 1; r < ranks_setup.size(); ++r)
      if (ranks_setup[r] != ranks_setup[0])
        throw Error("GEMM set-up differs between ranks: rank 0 runs " + ranks_setup[0] + ", rank " +
                    std::to_string(r) + " " + ranks_setup[r]);
    // Checkpoints record what this run computes with.
    state.precision = backend::precision_name(gemm.precision);
    state.fp32_engine = backend::fp32_engine_name(gemm.engine);
  }

  log::info("finemoe %s (%s) | %d rank(s): EP %d x DP %d | %d thread(s)/rank", FINEMOE_VERSION, FINEMOE_GIT,
            comm.size(), comm.ep_size(), comm.dp_size(), backend::num_threads());
  log::info("device: %s (%s) | backend: %s", device_name(be.device()).c_str(), device_why.c_str(),
            be.describe().c_str());
  log::info("model: d_model %lld, %lld blocks, %lld heads, seq %lld, vocab %lld, ffn %s", (long long)cfg.model.d_model,
            (long long)cfg.model.n_blocks, (long long)cfg.n_heads(), (long long)T, (long long)cfg.model.vocab_size,
            cfg.model.ffn.c_str());
  if (!cfg.dense())
    log::info("moe: E %lld, G %lld -> %lld experts of width %lld, %s routing (%s)", (long long)cfg.moe.experts,
              (long long)cfg.moe.granularity, (long long)cfg.n_experts(), (long long)cfg.d_expert(),
              cfg.moe.routing.c_str(),
              cfg.moe.routing == "expert_choice"
                  ? ("group " + std::to_string(cfg.moe.group_size) + ", capacity " + std::to_string(cfg.expert_capacity())).c_str()
                  : ("top-" + std::to_string(cfg.top_k()) + ", capacity factor " + std::to_string(cfg.moe.capacity_factor)).c_str());
  const double balance_coef = cfg.balance_loss_coef();
  const bool selection_bias = !cfg.dense() && cfg.moe.routing == "token_choice" && cfg.moe.bias_update_rate > 0;
  const bool aux_on = balance_coef > 0 || (!cfg.dense() && cfg.moe.z_loss > 0);
  if (!cfg.dense())
    log::info("balancing: balance loss %g%s | z-loss %g | selection bias rate %g (aux losses logged apart from the "
              "cross-entropy loss)",
              balance_coef, cfg.moe.balance_loss ? "" : " (auto)", cfg.moe.z_loss, cfg.moe.bias_update_rate);
  log::info("params: N %.4g (law, non-embedding, router excluded) | N_active %.4g | embedding %.4g | router %.4g | "
            "total stored %.4g",
            counts.N, counts.N_active, counts.embedding_params, counts.router_params, counts.total_params);
  log::info("FLOPs/token: %.4g (law: c_f=6, c_r=14) | %.4g incl. attention and head (for MFU)", counts.flops_per_token,
            counts.model_flops_per_token);
  log::info("memory/rank: replicated %.2f MiB, expert shard %.2f MiB (params+grads+AdamW)",
            double(store.local_bytes(ParamClass::replicated)) / 1048576.0,
            double(store.local_bytes(ParamClass::expert)) / 1048576.0);
  log::info("precision: %s (%s) | engine: %s (fp32 engine %s) | the same on all %d rank(s) | %d threads, "
            "OpenBLAS threading %s",
            backend::precision_name(gemm.precision).c_str(), gemm.precision_why.c_str(),
            backend::engine_description().c_str(), gemm.engine_why.c_str(), comm.size(), backend::num_threads(),
            backend::blas_threading().c_str());
  if (std::isfinite(entropy))
    log::info("data: %s | entropy rate %.4f +- %.4f nats/token (irreducible loss)", train_src->describe().c_str(),
              entropy, entropy_err);
  else
    log::info("data: %s", train_src->describe().c_str());
  log::info("batch: %lld sequences x %lld tokens = %lld tokens/step; %lld steps = %.4g tokens",
            (long long)cfg.train.batch_size, (long long)T, (long long)global_tokens, (long long)cfg.train.steps,
            double(global_tokens) * double(cfg.train.steps));
  if (!resume_from.empty())
    log::info("resumed from %s at step %lld", resume_from.c_str(), (long long)state.step);

  std::unique_ptr<MetricsWriter> metrics;
  collective(comm, [&] {
    if (comm.rank() == 0) {
      std::ofstream(fs::path(cfg.run.dir) / "config.ini") << cfg.to_ini();
      metrics = std::make_unique<MetricsWriter>((fs::path(cfg.run.dir) / "metrics.h5").string(), cfg, counts, entropy,
                                                resume_from.empty() ? -1 : state.step);
    }
  });

  const double peak = comm.allreduce_sum(measure_gemm_peak_flops(), Group::world);
  install_stop_signal_handlers();  // moe-train installed them at start; train() may run without it

  auto evaluate = [&]() {
    const int64_t batches = std::max<int64_t>(1, (cfg.train.eval_tokens + global_tokens - 1) / global_tokens);
    double sum = 0;
    for (int64_t k = 0; k < batches; ++k) {
      val_loader.load(k, tokens.data(), targets.data());
      sum += model.evaluate(tokens.data(), targets.data(), B) * double(B * T);
    }
    return comm.allreduce_sum(sum, Group::world) / double(batches * global_tokens);
  };
  auto checkpoint = [&]() {
    state.tokens = state.step * global_tokens;
    std::string path = save_checkpoint(cfg.run.dir, store, state, cfg, comm, owned);
    log::info("checkpoint: %s", path.c_str());
  };

  TrainResult result;
  result.final_eval_loss = std::numeric_limits<double>::quiet_NaN();
  if (state.step >= cfg.train.steps) {
    log::info("run already completed %lld of %lld steps; nothing to do", (long long)state.step,
              (long long)cfg.train.steps);
    if (metrics) metrics->set_status("completed");
    result.steps_done = state.step;
    return result;
  }

  // A stop requested during start-up: the state equals the checkpoint it was
  // resumed from (or the fresh init), so there is nothing to checkpoint.
  if (comm.any(stop_requested())) {
    log::info("stop signal received during start-up: exiting with code %d before the first step, no checkpoint "
              "needed (requeue to resume from step %lld)",
              int(kExitPreempted), (long long)state.step);
    if (metrics) metrics->set_status("preempted");
    result.exit_code = kExitPreempted;
    result.steps_done = state.step;
    return result;
  }

  AdamWParams hp{cfg.train.lr, cfg.train.beta1, cfg.train.beta2, cfg.train.eps, cfg.train.weight_decay};
  auto t_log = Clock::now();
  int64_t tokens_since_log = 0, steps_since_log = 0;
  int64_t a2a_bytes_mark = 0;
  double a2a_seconds_mark = 0;
  const int64_t warmup = cfg.warmup_steps();
  store.zero_grads();  // from here on each optimizer update leaves them zero
  // bf16 GEMMs convert each weight once per optimizer step (backend.hpp).
  const backend::RegisteredWeights registered = register_parameters(store);
  while (state.step < cfg.train.steps) {
    const int64_t s = state.step;
    loader.load(s, tokens.data(), targets.data());
    const double local_loss = model.forward(tokens.data(), targets.data(), B);
    const double local_aux = model.aux_loss();
    model.backward(double(B * T) / double(global_tokens));  // objective: cross-entropy + aux
    sync_grads(store, comm);
    // `loss` stays the pure cross-entropy (the curve the scaling law is about);
    // the auxiliary router losses are reported on their own.
    const double loss = comm.allreduce_sum(local_loss * double(B * T), Group::world) / double(global_tokens);
    const double aux = aux_on ? comm.allreduce_sum(local_aux * double(B * T), Group::world) / double(global_tokens) : 0.0;
    const double gnorm = global_grad_norm(store, comm, be);
    if (!std::isfinite(loss) || !std::isfinite(aux) || !std::isfinite(gnorm)) {
      std::string bad = first_nonfinite_grad(store, be);
      std::string where = std::isfinite(loss) ? "gradient of tensor '" + bad + "'" : "training loss";
      if (bad.empty() && std::isfinite(loss)) where = "gradient norm";
      if (std::isfinite(loss) && !std::isfinite(aux)) where = "auxiliary router loss (moe.balance_loss, moe.z_loss)";
      // Step numbers count from 1, as in the progress lines and metrics.h5.
      log::error("diverged at step %lld: NaN/Inf in %s (loss %g, grad norm %g); last good checkpoint kept",
                 (long long)(s + 1), where.c_str(), loss, gnorm);
      if (metrics) metrics->set_status("failed");
      result.exit_code = kExitDiverged;
      result.steps_done = s;
      return result;
    }
    AdamWStepOptions opt;
    opt.zero_grads = true;
    if (cfg.train.grad_clip > 0 && gnorm > cfg.train.grad_clip) opt.grad_scale = float(cfg.train.grad_clip / gnorm);
    hp.lr = lr_at(s, cfg.train.steps, warmup, cfg.train.lr, cfg.train.lr_min);
    adamw_update(store, hp, s + 1, opt, be);
    if (selection_bias) {
      // Loads of the whole global batch: integer sums over every rank (exact,
      // so every rank applies the same update and the bias stays identical).
      std::vector<std::vector<int64_t>> loads = model.selection_counts();
      for (auto& l : loads) comm.allreduce_sum(l.data(), int64_t(l.size()), Group::world);
      model.update_selection_bias(loads, cfg.moe.bias_update_rate);
    }
    state.step = s + 1;
    tokens_since_log += global_tokens;
    ++steps_since_log;
    result.final_loss = loss;

    const bool last = state.step == cfg.train.steps;
    if (state.step % cfg.train.log_every == 0 || last || state.step == 1) {
      const double dt = seconds_since(t_log);
      TrainRow row;
      row.step = state.step;
      row.tokens = state.step * global_tokens;
      row.loss = loss;
      row.aux_loss = aux;
      row.lr = hp.lr;
      row.grad_norm = gnorm;
      row.tokens_per_s = double(tokens_since_log) / dt;
      row.mfu = peak > 0 ? row.tokens_per_s * counts.model_flops_per_token / peak : 0.0;
      log::info("step %6lld/%lld | tokens %.4g | loss %.4f%s | lr %.3e | grad norm %.3f | %.0f tok/s | MFU %.1f%%",
                (long long)row.step, (long long)cfg.train.steps, double(row.tokens), loss,
                aux_on ? (" | aux " + fmt_aux(aux)).c_str() : "", hp.lr, gnorm, row.tokens_per_s, 100.0 * row.mfu);
      if (comm.ep_size() > 1) {
        // Expert-parallel traffic of this rank, for estimating cluster scaling.
        const double n = double(std::max<int64_t>(1, steps_since_log));
        log::info("  all-to-all (rank 0): %.3f MB/step sent off-rank, %.2f ms/step in collectives",
                  double(dispatcher->total_bytes_sent() - a2a_bytes_mark) / n / 1e6,
                  1e3 * (dispatcher->total_comm_seconds() - a2a_seconds_mark) / n);
        a2a_bytes_mark = dispatcher->total_bytes_sent();
        a2a_seconds_mark = dispatcher->total_comm_seconds();
      }
      std::vector<RoutingStats> rs = global_routing_stats(model.routing_stats(), comm);
      if (!rs.empty()) print_routing(state.step, rs);
      if (metrics) {
        metrics->append_train(row);
        if (!rs.empty()) metrics->append_routing(state.step, rs);
      }
      t_log = Clock::now();
      tokens_since_log = 0;
      steps_since_log = 0;
    }
    if ((cfg.train.eval_every > 0 && state.step % cfg.train.eval_every == 0) || last) {
      const double vl = evaluate();
      result.final_eval_loss = vl;
      log::info("eval  step %6lld | val loss %.4f%s", (long long)state.step, vl,
                std::isfinite(entropy) ? (" (entropy floor " + std::to_string(entropy) + ")").c_str() : "");
      if (metrics) metrics->append_eval({state.step, state.step * global_tokens, vl});
      t_log = Clock::now();
    }
    int sig = 0;
    const bool stop = comm.any(stop_requested(&sig));
    if (last || stop || (cfg.train.checkpoint_every > 0 && state.step % cfg.train.checkpoint_every == 0)) {
      checkpoint();
      t_log = Clock::now();
    }
    if (stop && !last) {
      log::info("stop signal received: checkpointed at step %lld, exiting with code %d (requeue to resume)",
                (long long)state.step, int(kExitPreempted));
      if (metrics) metrics->set_status("preempted");
      result.exit_code = kExitPreempted;
      result.steps_done = state.step;
      return result;
    }
  }
  if (cfg.train.final_eval_tokens > 0) {  // the run's final loss for scaling-law fits
    double token_sd = 0;
    const FinalEval fe = final_evaluate(cfg, model, *val_src, comm, state.step, &token_sd);
    log::info("final eval step %lld | loss %.4f +- %.4f (standard error over %lld held-out tokens; per-token sd %.3f)",
              (long long)fe.step, fe.loss, fe.stderr_loss, (long long)fe.tokens, token_sd);
    if (metrics) metrics->set_final_eval(fe);
  }
  if (metrics) {
    metrics->set_status("completed");
    metrics->close();  // checked: a failed final flush is exit 1, not a silent loss
  }
  log::info("done: %lld steps, %.4g tokens, final train loss %.4f, val loss %.4f", (long long)state.step,
            double(state.step * global_tokens), result.final_loss, result.final_eval_loss);
  result.steps_done = state.step;
  return result;
}

}  // namespace finemoe
