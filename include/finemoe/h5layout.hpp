// The HDF5 layout of run files: the ONE place dataset and attribute names
// live. The trainer writes with them, moe-analyze and the tests read with them,
// and README.md documents them.
#pragma once

namespace finemoe::h5layout {

// metrics.h5: 2 added /train/aux_loss, /routing/balance_loss and
// /routing/z_loss. Version 1 files still read (those columns come back NaN)
// and a resumed version-1 run continues in a version-2 file.
constexpr int kMetricsFormatVersion = 2;
constexpr int kMetricsOldestReadableVersion = 1;
// Checkpoints: 2: Fletcher32 per tensor, 1.10 format; 3: /buffers (the
// router's selection bias); 4: /state/precision and /state/fp32_engine (what
// the run resolved train.precision and train.fp32_engine to). 1 and 2 still
// load (their buffers are zero, as they were when they were written); 1 to 3
// mean fp32 engine openblas (the only one moe-train used then) and the stored
// config's train.precision, unknown when that was auto.
constexpr int kCheckpointFormatVersion = 4;

// ---- runs/NAME/metrics.h5 ---------------------------------------------------
// 1-D extendable chunked datasets, one row per logged step.
constexpr const char* kTrainGroup = "/train";
constexpr const char* kTrainStep = "/train/step";                 // int64
constexpr const char* kTrainTokens = "/train/tokens";             // int64, tokens seen after the step
constexpr const char* kTrainLoss = "/train/loss";                 // float64, nats/token
constexpr const char* kTrainLr = "/train/lr";                     // float64
constexpr const char* kTrainGradNorm = "/train/grad_norm";        // float64, before clipping
constexpr const char* kTrainTokensPerS = "/train/tokens_per_s";   // float64
constexpr const char* kTrainMfu = "/train/mfu";                   // float64, fraction of measured peak (0 if unknown)
// The auxiliary router losses added to the training objective at that step,
// coefficients applied (moe.balance_loss × balance + moe.z_loss × z, summed
// over blocks; 0 when off). /train/loss is the cross-entropy alone. (v2)
constexpr const char* kTrainAuxLoss = "/train/aux_loss";          // float64
constexpr const char* kEvalGroup = "/eval";
constexpr const char* kEvalStep = "/eval/step";                   // int64
constexpr const char* kEvalTokens = "/eval/tokens";               // int64
constexpr const char* kEvalLoss = "/eval/loss";                   // float64
constexpr const char* kRoutingGroup = "/routing";
constexpr const char* kRoutingStep = "/routing/step";             // int64 [rows]
constexpr const char* kRoutingExpertLoad = "/routing/expert_load";          // int64 [rows, n_blocks, E·G] tokens per expert (global)
constexpr const char* kRoutingDroppedFraction = "/routing/dropped_fraction";// float64 [rows, n_blocks]
constexpr const char* kRoutingEntropy = "/routing/router_entropy";          // float64 [rows, n_blocks]
// Per block, WITHOUT the coefficients (moe.hpp, "Auxiliary losses"), (v2):
constexpr const char* kRoutingBalanceLoss = "/routing/balance_loss";  // float64 [rows, n_blocks] E·G·Σ f_i·P_i, 1 = balanced
constexpr const char* kRoutingZLoss = "/routing/z_loss";              // float64 [rows, n_blocks] mean logsumexp(logits)²

// Root attributes of metrics.h5.
constexpr const char* kAttrFormatVersion = "format_version";  // int
constexpr const char* kAttrCodeVersion = "code_version";      // string (git describe)
constexpr const char* kAttrStatus = "status";                 // running | completed | failed | preempted
constexpr const char* kAttrN = "N";                           // float64, law's N
constexpr const char* kAttrNActive = "N_active";
constexpr const char* kAttrFlopsPerToken = "flops_per_token"; // paper's F/token
constexpr const char* kAttrModelFlopsPerToken = "model_flops_per_token";
constexpr const char* kAttrE = "E";                           // int64
constexpr const char* kAttrG = "G";                           // int64
constexpr const char* kAttrDModel = "d_model";
constexpr const char* kAttrNBlocks = "n_blocks";
constexpr const char* kAttrDense = "dense";                   // int 0/1
constexpr const char* kAttrSeed = "seed";
constexpr const char* kAttrEntropyFloor = "data_entropy_rate";// float64 nats/token, NaN if unknown
constexpr const char* kAttrCooldown = "cooldown_branch";      // int 0/1: intermediate points valid
constexpr const char* kAttrConfigIni = "config";              // string: the whole resolved config.ini
// Final evaluation on the fixed held-out set (train.final_eval_tokens), written
// once at the end of a run; moe-analyze fits on it. Absent in runs trained
// before it existed or with train.final_eval_tokens = 0.
constexpr const char* kAttrFinalEvalLoss = "final_eval_loss";      // float64 nats/token, mean over the set
constexpr const char* kAttrFinalEvalStderr = "final_eval_stderr";  // float64: sd of per-sequence means / sqrt(sequences)
constexpr const char* kAttrFinalEvalTokens = "final_eval_tokens";  // int64: tokens in the set
constexpr const char* kAttrFinalEvalStep = "final_eval_step";      // int64: step the weights are from
constexpr const char* kAttrConfigPrefix = "config.";          // plus one attribute per key, e.g. "config.moe.granularity"

// ---- runs/NAME/checkpoints/step_NNNNNNN.h5 ----------------------------------
constexpr const char* kCkptParams = "/params";     // /params/<tensor name>, global shape
constexpr const char* kCkptAdamM = "/adam_m";      // same names
constexpr const char* kCkptAdamV = "/adam_v";
constexpr const char* kCkptBuffers = "/buffers";   // /buffers/<name>: non-trainable state (params.hpp), v3
constexpr const char* kCkptState = "/state";       // attributes below
constexpr const char* kCkptStep = "step";          // int64: steps completed
constexpr const char* kCkptTokens = "tokens";      // int64: token cursor
constexpr const char* kCkptSeed = "seed";          // uint64
constexpr const char* kCkptConfigHash = "config_hash";
constexpr const char* kCkptConfigIni = "config";
constexpr const char* kCkptFormatVersion = "format_version";
constexpr const char* kCkptPrecision = "precision";      // fixed string fp32 | bf16, v4
constexpr const char* kCkptFp32Engine = "fp32_engine";   // fixed string openblas | onednn, v4
constexpr const char* kCkptLatestFile = "LATEST";  // text file: name of the newest complete checkpoint

}  // namespace finemoe::h5layout
