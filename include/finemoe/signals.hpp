// Preemption signals. Slurm sends SIGUSR1 (with --signal) or SIGTERM before it
// kills a job; an interactive user sends SIGINT. They only set a flag: the
// trainer finishes the current step, checkpoints, and exits with
// kExitPreempted (75) so the job script can requeue.
#pragma once

namespace finemoe {

// Blocks SIGUSR1, SIGTERM and SIGINT in the calling thread (and so in every
// thread it starts later) and, on the first call, starts the one thread that
// takes them with sigwait(): the training threads are never interrupted
// (signals.cpp says why). Call it first in main(), before any library starts
// a thread. A flag-setting handler stays installed for older threads.
void install_stop_signal_handlers();
bool stop_signals_blocked_in_this_thread();  // tests
// True once SIGUSR1, SIGTERM or SIGINT arrived; the signal number in *sig.
bool stop_requested(int* sig = nullptr);
void clear_stop_request();  // tests

// When the process was started by an MPI launcher (mpirun/orted or srun: the
// environment says so) and that parent dies (killed with -9, say), the ranks
// would otherwise keep training, and writing checkpoints, until the MPI
// runtime notices (1-4 s; measured 1.0 s for 2 ranks of input/tiny.ini). A
// detached thread polls getppid() every `poll_ms` and, once the parent is
// gone, prints one line and _exit()s at once without writing anything more:
// what the user meant by killing the launcher. Checkpoints are atomic (a kill
// mid-write leaves the previous one), so nothing is lost that a kill -9 of the
// ranks themselves would not lose. A run started without a launcher (a
// singleton, or `nohup moe-train &` whose shell exits) is not watched.
// Returns whether a watch was started.
bool exit_when_launcher_dies(int poll_ms = 100);

}  // namespace finemoe
