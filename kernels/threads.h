// The kernels' own threads: a fork-join pool whose every wait spins briefly, then sleeps.
//
// Why not OpenMP (torch's intra-op threads): libgomp's threads spin before they sleep, at every barrier and
// after every parallel region, for GOMP_SPINCOUNT `pause` instructions: 300,000 by default, "about 3 ms" by
// libgomp's own estimate and several times that where `pause` is slow (Intel since Skylake). On a quiet
// machine the partner arrives within microseconds and the spin is cheap. On a busy one (a shared server, a
// laptop that is compiling) the partner is often descheduled, the spinning thread burns its whole time slice
// waiting for it, and a token that crosses ~300 barriers (a 30-layer model's step) takes a second instead of
// milliseconds. libgomp reads its settings once, when torch loads it, so a library imported after torch
// cannot change them. Here a wait spins for at most TINYSLM_SPIN_US microseconds (read once; default
// SPIN_US), checking the clock, then sleeps in the kernel (a futex on Linux) until it is woken; and the work
// is claimed piece by piece rather than split in fixed shares (see Pool), so that nobody waits for a thread
// that is not running unless it holds a piece.
//
//   pool().run(nt, phases, count)   runs the phases in order on up to nt threads (the caller is thread 0)
//   parallel_for(n, grain, f)       f(lo, hi) over ranges of [0, n), one phase
//
// A call made while another is running (a second Python thread, or a kernel called from inside a phase) runs
// on the calling thread alone, and a forked child makes a pool of its own: neither waits for threads that
// cannot come.

#pragma once

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace tinyslm {

constexpr int64_t SPIN_US = 20;  // default spin before sleeping: above a quiet phase end's wait, far below a time slice

inline int64_t spin_ns() {
  static const int64_t ns = [] {
    const char* s = std::getenv("TINYSLM_SPIN_US");
    const long long us = s && *s ? std::atoll(s) : SPIN_US;
    return (int64_t)std::clamp(us, 0LL, 1000000LL) * 1000;
  }();
  return ns;
}

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// A 32-bit word that threads wait on to change: bump() changes it and wakes whoever sleeps on it.
struct Signal {
  std::atomic<uint32_t> word{0};
  std::atomic<int> sleepers{0};

  // Returns once word != seen: spins up to spin_ns(), then sleeps.
  void wait_while(uint32_t seen) {
    const int64_t limit = spin_ns(), start = limit > 0 ? now_ns() : 0;
    for (int i = 1; limit > 0; ++i) {
      if (word.load(std::memory_order_acquire) != seen) return;
      cpu_relax();
      if (i % 64 == 0 && now_ns() - start > limit) break;  // the clock read every 64 spins (~20 ns each)
    }
    sleepers.fetch_add(1, std::memory_order_seq_cst);  // seq_cst with bump's two steps: no wake-up is lost
    while (word.load(std::memory_order_seq_cst) == seen) {
#ifdef __linux__
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0);
#else
      std::this_thread::yield();
#endif
    }
    sleepers.fetch_sub(1, std::memory_order_relaxed);
  }

  void bump() {
    word.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) > 0) {
#ifdef __linux__
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
#endif
    }
  }
};

// One step of a run: `items` pieces of work, done by fn(lo, hi, t) over ranges of up to `chunk` items that the
// run's threads claim as they come (t: the claiming thread's index, for per-thread scratch space).
struct Phase {
  int64_t items, chunk;
  std::function<void(int64_t, int64_t, int)> fn;
};

// Runs a list of phases on up to nt threads, each phase after the previous one has finished.
//
// Threads claim a phase's pieces, so a thread the OS has descheduled holds up only the piece it is in, not
// a share fixed in advance: while it waits for a core the others do its part, and when it comes back it
// joins the phase the run has reached. (A barrier between fixed shares waits for every thread to arrive, a
// time slice each time one is descheduled: with one busy process per core, a 2-thread token then ran 4x
// slower than on 1 thread; measured in docs/performance.md.)
class Pool {
 public:
  void run(int nt, const Phase* phases, int count) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (nt <= 1 || !busy.owns_lock()) {  // one thread asked, or the pool is in use (another caller, or nested)
      for (int p = 0; p < count; ++p)
        if (phases[p].items > 0) phases[p].fn(0, phases[p].items, 0);
      return;
    }
    while ((int)workers_.size() < nt - 1) {
      const int index = (int)workers_.size() + 1;
      const uint32_t seen = start_.word.load(std::memory_order_relaxed);  // the runs before it are not its own
      workers_.emplace_back([this, index, seen] { work(index, seen); });
      workers_.back().detach();  // never joined: the pool lives as long as the process
    }
    if ((int)claimed_.size() < count * nt || (int)done_.size() < count) {  // (no worker is in a run here: safe)
      claimed_ = std::vector<Counter>(count * nt);
      done_ = std::vector<Counter>(count);
    }
    for (int i = 0; i < count * nt; ++i) claimed_[i].value.store(0, std::memory_order_relaxed);
    for (int p = 0; p < count; ++p) done_[p].value.store(0, std::memory_order_relaxed);
    phases_ = phases, count_ = count, nt_ = nt;
    first_ = step_.word.load(std::memory_order_relaxed);  // the phase counter's value at this run's phase 0
    live_.store(true, std::memory_order_seq_cst);  // publishes the run to the workers that then see live_
    start_.bump();
    work_on_run(0);
    live_.store(false, std::memory_order_seq_cst);
    for (;;) {  // no worker may still read this run's phases when it returns
      const uint32_t seen = left_.word.load(std::memory_order_acquire);
      if (inside_.load(std::memory_order_seq_cst) == 0) break;
      left_.wait_while(seen);
    }
  }

 private:
  // This thread's part of the live run, from the phase the run has reached: the pieces of its own share of the
  // phase's items (the t-th of nt contiguous ranges, as a static split would give it: the same rows stream
  // through the same core token after token), then the unclaimed pieces of the others' shares.
  void work_on_run(int t) {
    for (;;) {
      const uint32_t at = step_.word.load(std::memory_order_acquire);
      const int p = (int)(at - first_);
      if (p >= count_) return;
      const Phase& ph = phases_[p];
      const int64_t items = std::max<int64_t>(ph.items, 1), chunk = std::max<int64_t>(ph.chunk, 1);  // (empty: 1 no-op)
      for (int i = 0; i < nt_; ++i) {
        const int r = (t + i) % nt_;
        const int64_t start = items * r / nt_, end = items * (r + 1) / nt_;
        for (;;) {
          const int64_t lo = start + claimed_[p * nt_ + r].value.fetch_add(chunk, std::memory_order_relaxed);
          if (lo >= end) break;
          const int64_t hi = std::min(lo + chunk, end);
          if (lo < ph.items) ph.fn(lo, std::min(hi, ph.items), t);
          if (done_[p].value.fetch_add(hi - lo, std::memory_order_acq_rel) + (hi - lo) == items) step_.bump();  // last
        }
      }
      step_.wait_while(at);  // until the phase's last piece is done (by whoever claimed it)
    }
  }

  void work(int index, uint32_t seen) {
    for (;;) {
      start_.wait_while(seen);
      seen = start_.word.load(std::memory_order_acquire);
      inside_.fetch_add(1, std::memory_order_seq_cst);
      if (live_.load(std::memory_order_seq_cst) && index < nt_) work_on_run(index);
      if (inside_.fetch_sub(1, std::memory_order_seq_cst) == 1) left_.bump();
    }
  }

  std::mutex busy_;
  std::vector<std::thread> workers_;
  Signal start_, step_, left_;  // a run started; a phase finished (the word counts phases); a worker left a run
  std::atomic<bool> live_{false};
  std::atomic<int> inside_{0};
  struct alignas(64) Counter {  // one to a cache line: threads counting in different ones do not contend
    std::atomic<int64_t> value{0};
  };
  std::vector<Counter> claimed_, done_;  // per phase and share: items claimed; per phase: items finished
  const Phase* phases_ = nullptr;
  int count_ = 0, nt_ = 0;
  uint32_t first_ = 0;
};

// This process's pool (a forked child gets a new one: the parent's threads do not exist in it).
inline Pool& pool() {
  static std::atomic<Pool*> current{nullptr};
  static std::atomic<pid_t> owner{0};
  Pool* p = current.load(std::memory_order_acquire);
  if (p == nullptr || owner.load(std::memory_order_acquire) != getpid()) {
    static std::mutex making;
    std::lock_guard<std::mutex> lock(making);
    p = current.load(std::memory_order_acquire);
    if (p == nullptr || owner.load(std::memory_order_acquire) != getpid()) {
      p = new Pool();  // the old one (a parent's) is left as it is: its threads are not in this process
      current.store(p, std::memory_order_release);
      owner.store(getpid(), std::memory_order_release);
    }
  }
  return *p;
}

// The kernels' thread count: set_threads(n) if n > 0 was set, else torch's intra-op setting (torch.set_num_threads,
// tinyslm's --threads).
inline std::atomic<int>& threads_setting() {
  static std::atomic<int> n{0};
  return n;
}
inline int threads() {
  const int n = threads_setting().load(std::memory_order_relaxed);
  return std::max(1, n > 0 ? n : at::get_num_threads());
}

// f(lo, hi) over ranges of [0, n) of at least `grain` items (about 4 a thread); everything on this thread when
// n <= grain.
template <typename F>
void parallel_for(int64_t n, int64_t grain, const F& f) {
  if (n <= 0) return;
  const int nt = (int)std::min<int64_t>(threads(), (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (nt <= 1) {
    f((int64_t)0, n);
    return;
  }
  const Phase phase{n, std::max<int64_t>(grain, (n + 4 * nt - 1) / (4 * nt)), [&](int64_t lo, int64_t hi, int) { f(lo, hi); }};
  pool().run(nt, &phase, 1);
}

}  // namespace tinyslm
