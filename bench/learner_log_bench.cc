// Learner durability at actor rates: acknowledged submissions per second of one
// LearnerHandler over a real FileStateStore, with N concurrent actor threads leasing and
// submitting while a trainer thread takes batches (a snapshot per step, a checkpoint
// every 4 steps), in the two durability modes:
//   snapshot-per-call  every lease/submit writes the whole state (temp + fsync + rename +
//                      directory fsync) under the handler's mutex (before issue 18)
//   log                one record appended under the mutex, fdatasync outside it,
//                      shared by concurrent callers (group commit)
//
//   build/bin/rlhf_bench_learner_log [--actors=1,4,16] [--seconds=3] [--dir=/tmp]
//
// Prints a table (submissions/s, trajectories/s, mean ack latency, records per fsync)
// and the log/snapshot ratio per actor count. Progress goes to stderr.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "learner/learner_handler.h"
#include "learner/state_store.h"

ABSL_FLAG(std::string, actors, "1,4,16", "concurrent actor counts");
ABSL_FLAG(double, seconds, 3.0, "measurement time per configuration");
ABSL_FLAG(std::string, dir, "/tmp", "where the state files go (the disk being measured)");
ABSL_FLAG(int, prompts_per_step, 64, "prompt groups per training step");
ABSL_FLAG(int, samples, 4, "trajectories per prompt");
ABSL_FLAG(int, response_len, 64, "response tokens per trajectory");

namespace {

using rlhf::learner::FileStateStore;
using rlhf::learner::LearnerHandler;
using rlhf::learner::LearnerHandlerOptions;

struct Result {
  double submissions_per_s = 0;
  double trajectories_per_s = 0;
  double mean_ack_ms = 0;
  double records_per_sync = 0;
  int64_t steps = 0;
};

rlhf::v1::SubmitTrajectoriesRequest Submission(const std::string& actor,
                                               const rlhf::v1::LeasePromptsResponse& lease,
                                               int samples, int response_len) {
  rlhf::v1::SubmitTrajectoriesRequest r;
  r.set_actor_id(actor);
  r.set_lease_id(lease.lease_id());
  for (const auto& p : lease.prompts()) {
    for (int s = 0; s < samples; ++s) {
      auto* t = r.add_trajectories();
      t->set_prompt_id(p.prompt_id());
      *t->mutable_tokens()->mutable_prompt() = p.tokens();
      for (int j = 0; j < response_len; ++j) {
        t->mutable_tokens()->add_response((j * 7 + s) % 200);
        t->add_behaviour_logprobs(-1.0f - 0.01f * j);
        t->add_ref_logprobs(-1.1f - 0.01f * j);
        t->add_kl(0.1f);
      }
      t->set_reward(0.5f);
      t->mutable_version()->set_version(lease.latest_version().version());
    }
  }
  return r;
}

Result Run(bool log_records, int actors, absl::Duration duration) {
  const std::string dir = absl::StrCat(absl::GetFlag(FLAGS_dir), "/rlhf_bench_learner_log_",
                                       ::getpid(), "_", log_records ? "log" : "snap", "_", actors);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  LearnerHandlerOptions options;
  options.prompts_per_step = absl::GetFlag(FLAGS_prompts_per_step);
  options.samples_per_prompt = absl::GetFlag(FLAGS_samples);
  options.prompts_per_lease = 2;
  options.max_staleness = 1;
  options.total_steps = 1 << 30;
  options.vocab_size = 256;
  options.max_seq_len = 16 + absl::GetFlag(FLAGS_response_len);
  options.retry_after = absl::Milliseconds(1);
  options.log_records = log_records;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 1000; ++i) prompts.push_back({1 + i % 200, 2, 3, 4, 5, 6, 7, 8});
  FileStateStore store(dir + "/state.pb");
  auto handler = LearnerHandler::Create(options, prompts, &store);
  if (!handler.ok() || !(*handler)->Restore(0, 0).ok()) {
    std::fprintf(stderr, "cannot create the handler\n");
    std::exit(1);
  }
  LearnerHandler& h = **handler;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> submissions{0}, trajectories{0}, ack_ns{0};
  std::thread trainer([&] {
    while (!stop) {
      auto batch = h.WaitForBatch(absl::Milliseconds(20));
      if (!batch) continue;
      (void)h.OnTrained(*batch, h.version() + 1, {});
      if (batch->step % 4 == 0) (void)h.OnCheckpointed(batch->step);
    }
  });
  const int64_t syncs_before = store.syncs();
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;
  std::vector<std::thread> threads;
  for (int a = 0; a < actors; ++a) {
    threads.emplace_back([&, a] {
      rlhf::v1::RegisterRequest reg;
      reg.set_actor_name(absl::StrCat("a", a));
      auto id = h.Register(reg);
      if (!id.ok()) return;
      while (absl::Now() < end) {
        rlhf::v1::LeasePromptsRequest lr;
        lr.set_actor_id(id->actor_id());
        lr.mutable_held_version()->set_version(h.version());
        auto lease = h.LeasePrompts(lr);
        if (!lease.ok()) return;
        if (lease->lease_id().empty()) {
          absl::SleepFor(absl::Milliseconds(1));
          continue;
        }
        auto request = Submission(id->actor_id(), *lease, options.samples_per_prompt,
                                  absl::GetFlag(FLAGS_response_len));
        const absl::Time t0 = absl::Now();
        auto ack = h.Submit(request);
        if (!ack.ok()) return;
        ack_ns += absl::ToInt64Nanoseconds(absl::Now() - t0);
        ++submissions;
        trajectories += ack->accepted();
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  stop = true;
  trainer.join();
  Result r;
  r.submissions_per_s = submissions / seconds;
  r.trajectories_per_s = trajectories / seconds;
  r.mean_ack_ms = submissions > 0 ? ack_ns / 1e6 / submissions : 0;
  const int64_t syncs = store.syncs() - syncs_before;
  // Records: every lease and submission is one (registrations are few).
  r.records_per_sync = log_records && syncs > 0 ? 2.0 * submissions / syncs : 0;
  r.steps = h.Stats().step();
  std::filesystem::remove_all(dir);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::vector<int> counts;
  for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_actors), ',')) {
    int n;
    if (!absl::SimpleAtoi(c, &n) || n < 1) {
      std::fprintf(stderr, "--actors: '%s' is not a positive integer\n", std::string(c).c_str());
      return 2;
    }
    counts.push_back(n);
  }
  const absl::Duration duration = absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::printf("learner durability: %d prompts/step x %d samples x %d tokens, state on %s\n\n",
              absl::GetFlag(FLAGS_prompts_per_step), absl::GetFlag(FLAGS_samples),
              absl::GetFlag(FLAGS_response_len), absl::GetFlag(FLAGS_dir).c_str());
  std::printf(
      "| mode | actors | submissions/s | trajectories/s | mean ack ms | records/fsync | steps |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  std::vector<std::pair<double, double>> ratios;
  const int total = static_cast<int>(counts.size()) * 2;
  int done = 0;
  for (int n : counts) {
    double snap_rate = 0;
    for (bool log : {false, true}) {
      std::fprintf(stderr, "[%d/%d] %s, %d actors (%.0f s)...\n", ++done, total,
                   log ? "log" : "snapshot-per-call", n, absl::ToDoubleSeconds(duration));
      Result r = Run(log, n, duration);
      std::printf(
          "| %s | %d | %.0f | %.0f | %.2f | %s | %lld |\n", log ? "log" : "snapshot-per-call", n,
          r.submissions_per_s, r.trajectories_per_s, r.mean_ack_ms,
          log ? absl::StrCat(static_cast<int>(r.records_per_sync * 10) / 10.0).c_str() : "-",
          static_cast<long long>(r.steps));
      std::fflush(stdout);
      if (!log) snap_rate = r.submissions_per_s;
      if (log)
        ratios.push_back(
            {static_cast<double>(n), snap_rate > 0 ? r.submissions_per_s / snap_rate : 0});
    }
  }
  std::printf("\n| actors | log / snapshot-per-call (submissions/s) |\n|---:|---:|\n");
  for (const auto& [n, ratio] : ratios) std::printf("| %.0f | %.1fx |\n", n, ratio);
  return 0;
}
