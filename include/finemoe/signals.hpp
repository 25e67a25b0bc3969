// Preemption signals. Slurm sends SIGUSR1 (with --signal) or SIGTERM before it
// kills a job; an interactive user sends SIGINT. The handler only sets a flag:
// the trainer finishes the current step, checkpoints, and exits with
// kExitPreempted (75) so the job script can requeue.
#pragma once

namespace finemoe {

void install_stop_signal_handlers();
// True once SIGUSR1, SIGTERM or SIGINT arrived; the signal number in *sig.
bool stop_requested(int* sig = nullptr);
void clear_stop_request();  // tests

}  // namespace finemoe
