// Weight broadcast benchmark (issue 6): the 124M "gpt2-small" policy sent to 1, 2 and 4
// actors with each transport, through the real LearnerService on loopback (the
// WatchWeights control stream; buckets over gRPC, or Gloo broadcast), compared with
// bytes / loopback TCP bandwidth measured in the same run.
//
//   rlhf_bench_weights [--preset=gpt2-small] [--actors=1,2,4] [--bucket_mb=16] [--reps=2]
//
// Time = Publish() until every actor holds the verified snapshot (hash checked), in a
// steady state (after a warm-up version, so the collective's rendezvous is not counted).
// The ideal is N copies of the buffer through loopback: N * bytes / bandwidth (a root
// sends every copy, for both transports at these world sizes), the bandwidth being the
// best of several plain socket-pair transfers measured just before each configuration
// (loop_GB/s; both ends' buffers stay in cache, so it is a ceiling no 498 MB transfer
// reaches). mem_GB/s / mem/t: the same transfer of the snapshot's size from one buffer in
// memory to another, which is what a transport has to move. flatten_s: the learner's
// copy of the policy into the (recycled) snapshot buffer, hash included, not in `seconds`.
//
// Where the time goes: cpu_s is the CPU time the whole process (learner and actors: both
// ends run here) spent during the reported version, and mem_cpu_s the same for the
// memory-to-memory reference moving the same bytes. cpu/mem_cpu is the transport's CPU
// work per byte against bare sockets'; cores is cpu_s / seconds. A transport that keeps
// every core busy (cores ~ the machine's count) cannot beat cpu_s / cores, so on a host
// where both ends share the cores its mem/t is bounded by about mem_cpu_s / cpu_s.
//
// Where the actors run (--placements, the `in` column): "threads" runs every actor's
// client and receiver in this process, beside the learner's server, so both ends share
// one gRPC stack (its pollers and executor); "processes" runs each actor as a child
// process of this binary (--child_learner_address), as a job deploys rlhf-actor. Children
// report each verified version (with its hash) over a pipe; the version's time ends when
// the last report is read, and cpu_s adds the children's CPU time (clock_getcpuclockid)
// to this process's.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "core/model/checkpoint.h"
#include "core/model/model.h"
#include "core/model/threads.h"
#include "core/status_macros.h"
#include "learner/learner_client.h"
#include "learner/learner_handler.h"
#include "learner/learner_service.h"
#include "services/server.h"
#include "services/weights/transport.h"

ABSL_FLAG(std::string, preset, "gpt2-small", "model preset whose weights are sent");
ABSL_FLAG(std::vector<std::string>, actors, std::vector<std::string>({"1", "2", "4"}),
          "actor counts");
ABSL_FLAG(int, bucket_mb, 16, "bucket size, MiB");
ABSL_FLAG(int, reps, 2, "measured versions per configuration (the best is reported)");
ABSL_FLAG(bool, retain_freed_memory, true,
          "rlhf::RetainFreedMemory() (core/model/threads.h) at start, as rlhf-actor and "
          "rlhf-learner do through ConfigureComputeThreads (false: glibc's defaults)");
ABSL_FLAG(std::vector<std::string>, transports, std::vector<std::string>({"grpc", "collective"}),
          "transports");
ABSL_FLAG(std::vector<std::string>, placements, std::vector<std::string>({"threads", "processes"}),
          "where the actors run: threads (of this process) and/or processes (one child each)");
ABSL_FLAG(std::string, child_learner_address, "",
          "internal: run as one actor of a `processes` configuration, receiving from this "
          "learner and reporting each verified version on stdout");
ABSL_FLAG(std::string, child_transport, "grpc", "internal: the child's transport");

namespace {

// CPU seconds `clock` (a CPU-time clock) has counted so far; 0 if it cannot be read.
double CpuSeconds(clockid_t clock) {
  timespec t{};
  if (::clock_gettime(clock, &t) != 0) return 0;
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// CPU seconds used by all the process's threads so far.
double ProcessCpuSeconds() { return CpuSeconds(CLOCK_PROCESS_CPUTIME_ID); }

// One measured transfer: its rate and the process's CPU time per byte moved.
struct Transfer {
  double bytes_per_second = 0;
  double cpu_seconds_per_byte = 0;
};

// Loopback TCP bandwidth: one sender thread, one receiver, `chunk`-byte writes/reads of
// `total` bytes. The sender sends `src` over and over and the receiver fills `dst` over
// and over: chunk-sized buffers stay in cache, snapshot-sized ones make each side read or
// write memory, as any transfer of a snapshot bigger than the caches must.
Transfer LoopbackOnce(int64_t total, size_t chunk, const std::vector<char>& src,
                      std::vector<char>& dst) {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  ::listen(listener, 1);
  std::thread sender([&] {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    for (int64_t sent = 0; sent < total;) {
      const size_t at = static_cast<size_t>(sent) % src.size();
      ssize_t n = ::send(s, src.data() + at,
                         std::min<int64_t>({static_cast<int64_t>(chunk),
                                            static_cast<int64_t>(src.size() - at), total - sent}),
                         0);
      if (n <= 0) break;
      sent += n;
    }
    ::close(s);
  });
  int c = ::accept(listener, nullptr, nullptr);
  absl::Time start = absl::Now();
  const double cpu_start = ProcessCpuSeconds();
  int64_t got = 0;
  for (;;) {
    const size_t at = static_cast<size_t>(got) % dst.size();
    ssize_t n = ::recv(c, dst.data() + at, std::min(chunk, dst.size() - at), 0);
    if (n <= 0) break;
    got += n;
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  const double cpu = ProcessCpuSeconds() - cpu_start;
  sender.join();
  ::close(c);
  ::close(listener);
  return {got / secs, cpu / std::max<double>(1.0, static_cast<double>(got))};
}

// The best of `rounds` transfers of `total` bytes in 64 KiB and in 1 MiB chunks, between
// buffers of `buffer_bytes` (0: one chunk, which stays in cache), touched beforehand so
// no page fault is timed.
Transfer BestLoopback(int64_t total, int64_t buffer_bytes, int rounds) {
  Transfer best;
  for (size_t chunk : {size_t{64} << 10, size_t{1} << 20}) {
    const size_t size = buffer_bytes > 0 ? static_cast<size_t>(buffer_bytes) : chunk;
    const std::vector<char> src(size, 1);
    std::vector<char> dst(size, 0);
    for (int round = 0; round < rounds; ++round) {
      const Transfer t = LoopbackOnce(total, chunk, src, dst);
      if (t.bytes_per_second > best.bytes_per_second) best = t;
    }
  }
  return best;
}

// The reference "wire speed": 256 MiB through chunk-sized buffers, which stay in cache.
// Measured before every configuration, as the load of the shared cores changes (one
// 1 GiB transfer read anywhere from 1.0 to 3.6 GB/s within minutes on this VM).
double LoopbackBytesPerSecond() { return BestLoopback(int64_t{256} << 20, 0, 3).bytes_per_second; }

// The same for a snapshot of `bytes` read from and written to memory.
Transfer MemoryLoopback(int64_t bytes) { return BestLoopback(bytes, bytes, 3); }

// CPU seconds a child process has used so far (0 once it is gone).
double ChildCpuSeconds(pid_t pid) {
  clockid_t clock;
  return ::clock_getcpuclockid(pid, &clock) == 0 ? CpuSeconds(clock) : 0;
}

rlhf::weights::WeightTransportOptions TransportOptions(rlhf::v1::WeightTransport transport,
                                                       int64_t bucket) {
  rlhf::weights::WeightTransportOptions wo;
  wo.transport = transport;
  wo.bucket_bytes = bucket;
  wo.timeout_s = 120;
  return wo;
}

// One actor's side of the broadcast, as rlhf-actor does it: registers, opens the
// WatchWeights stream, and receives every version into its own recycled buffers.
class ActorSide {
 public:
  static absl::StatusOr<std::unique_ptr<ActorSide>> Connect(const std::string& address,
                                                            int64_t bucket) {
    rlhf::services::ChannelOptions co;
    co.target = address;
    co.max_message_bytes = rlhf::weights::MaxMessageBytesFor(bucket);
    RLHF_ASSIGN_OR_RETURN(auto client, rlhf::learner::GrpcLearnerClient::Create(co));
    RLHF_ASSIGN_OR_RETURN(auto reg, client->Register({}, absl::Now() + absl::Seconds(10)));
    rlhf::v1::WatchWeightsRequest wr;
    wr.set_actor_id(reg.actor_id());
    RLHF_ASSIGN_OR_RETURN(auto stream, client->WatchWeights(wr));
    return std::unique_ptr<ActorSide>(new ActorSide(std::move(client), std::move(stream)));
  }

  // Receives versions until the stream ends, calling on_version(version, hash) for each
  // verified one. Returns the stream's end (CANCELLED after Cancel()).
  absl::Status ReceiveAll(const rlhf::weights::WeightTransportOptions& wo,
                          absl::FunctionRef<void(int64_t, uint64_t)> on_version) {
    RLHF_ASSIGN_OR_RETURN(auto receiver, rlhf::weights::MakeWeightReceiver(wo));
    for (;;) {
      auto msg = stream_->Next();
      if (!msg.ok()) return msg.status();
      if (!msg->has_header()) continue;
      auto flat = receiver->Receive(msg->header(), [&](const rlhf::weights::BucketTarget& t) {
        return stream_->NextBucket(t);  // as the actor does
      });
      if (!flat.ok()) {
        std::fprintf(stderr, "receive: %s\n", flat.status().ToString().c_str());
        continue;
      }
      on_version((*flat)->version, (*flat)->hash);
    }
  }
  void Cancel() { stream_->Cancel(); }

 private:
  ActorSide(std::unique_ptr<rlhf::learner::GrpcLearnerClient> client,
            std::unique_ptr<rlhf::learner::WeightsStream> stream)
      : client_(std::move(client)), stream_(std::move(stream)) {}
  std::unique_ptr<rlhf::learner::GrpcLearnerClient> client_;
  std::unique_ptr<rlhf::learner::WeightsStream> stream_;
};

// --child_learner_address: one actor in its own process. Prints "<version> <hash>" for
// each verified version; exits when the learner's server goes away (or with us).
int RunChildActor() {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const int64_t bucket = int64_t{absl::GetFlag(FLAGS_bucket_mb)} << 20;
  auto actor = ActorSide::Connect(absl::GetFlag(FLAGS_child_learner_address), bucket);
  if (!actor.ok()) {
    std::fprintf(stderr, "child actor: %s\n", actor.status().ToString().c_str());
    return 1;
  }
  const auto transport = absl::GetFlag(FLAGS_child_transport) == "collective"
                             ? rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE
                             : rlhf::v1::WEIGHT_TRANSPORT_GRPC;
  (void)(*actor)->ReceiveAll(TransportOptions(transport, bucket), [](int64_t v, uint64_t hash) {
    std::printf("%lld %llu\n", static_cast<long long>(v), static_cast<unsigned long long>(hash));
    std::fflush(stdout);
  });
  return 0;
}

// A child actor process and the pipe it reports on.
struct ChildActor {
  pid_t pid = -1;
  int report_fd = -1;
};

// Starts this binary as one child actor of the learner at `address`.
absl::StatusOr<ChildActor> SpawnChildActor(const std::string& address,
                                           const std::string& transport) {
  int fds[2];  // close-on-exec: no other child inherits this one's pipe
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  const std::vector<std::string> args = {
      "/proc/self/exe", absl::StrCat("--child_learner_address=", address),
      absl::StrCat("--child_transport=", transport),
      absl::StrCat("--bucket_mb=", absl::GetFlag(FLAGS_bucket_mb)),
      absl::StrCat("--retain_freed_memory=",
                   absl::GetFlag(FLAGS_retain_freed_memory) ? "true" : "false")};
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {  // only async-signal-safe calls until exec
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  return ChildActor{pid, fds[0]};
}

// One configuration's result: the best version's seconds and the CPU seconds of every
// process taking part during that version, and the learner's fastest Flatten (not in
// `seconds`).
struct ConfigResult {
  double seconds = 1e30;
  double cpu_seconds = 0;
  double flatten_seconds = 1e30;
};

// Runs one transport with `n` actors (threads of this process, or child processes) over
// `reps` measured versions.
ConfigResult RunConfig(rlhf::v1::WeightTransport transport, bool in_processes, int n,
                       const rlhf::weights::NamedTensors& tensors, int64_t bucket, int reps) {
  rlhf::learner::LearnerHandlerOptions ho;
  auto handler = *rlhf::learner::LearnerHandler::Create(ho, {{1}}, nullptr);
  const rlhf::weights::WeightTransportOptions wo = TransportOptions(transport, bucket);
  auto publisher = *rlhf::weights::MakeWeightPublisher(wo);
  rlhf::v1::RegisterResponse tmpl;
  tmpl.set_transport(transport);
  rlhf::learner::LearnerServiceImpl service(handler.get(), publisher.get(), tmpl, "", nullptr);
  rlhf::services::GrpcServerOptions so;
  so.max_message_bytes = rlhf::weights::MaxMessageBytesFor(bucket);
  auto server = *rlhf::services::GrpcServer::Create(so, {&service});
  if (!server->Start().ok()) return {/*seconds=*/-1, 0, 0};

  absl::Mutex mu;
  std::map<int64_t, int> received;  // version -> actors holding it
  std::map<int64_t, std::set<uint64_t>> hashes;
  auto on_version = [&](int64_t v, uint64_t hash) {
    absl::MutexLock l(&mu);
    ++received[v];
    hashes[v].insert(hash);
  };
  std::vector<std::unique_ptr<ActorSide>> actors;  // placement "threads"
  std::vector<ChildActor> children;                // placement "processes"
  std::vector<std::thread> threads;  // the receivers, or the readers of the children's reports
  for (int i = 0; i < n; ++i) {
    if (in_processes) {
      auto child = SpawnChildActor(
          server->address(),
          transport == rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE ? "collective" : "grpc");
      if (!child.ok()) {
        std::fprintf(stderr, "%s\n", child.status().ToString().c_str());
        break;
      }
      children.push_back(*child);
      threads.emplace_back([&, fd = child->report_fd] {
        FILE* in = ::fdopen(fd, "r");
        long long v;
        unsigned long long hash;
        while (std::fscanf(in, "%lld %llu", &v, &hash) == 2) on_version(v, hash);
        std::fclose(in);
      });
    } else {
      auto actor = ActorSide::Connect(server->address(), bucket);
      if (!actor.ok()) {
        std::fprintf(stderr, "%s\n", actor.status().ToString().c_str());
        break;
      }
      actors.push_back(std::move(*actor));
      threads.emplace_back([&, a = actors.back().get(), i] {
        const absl::Status end = a->ReceiveAll(wo, on_version);
        if (end.code() != absl::StatusCode::kCancelled) {
          std::fprintf(stderr, "stream %d ended: %s\n", i, end.ToString().c_str());
        }
      });
    }
  }
  auto cpu_now = [&] {
    double cpu = ProcessCpuSeconds();
    for (const ChildActor& c : children) cpu += ChildCpuSeconds(c.pid);
    return cpu;
  };
  ConfigResult result;
  rlhf::weights::BufferPool pool(2);  // as the learner does
  const bool all_started = static_cast<int>(threads.size()) == n;
  for (int v = 1; all_started && v <= reps + 1; ++v) {  // version 1 is the warm-up
    absl::Time flatten_start = absl::Now();
    auto flat = *rlhf::weights::Flatten(tensors, v, &pool);
    if (v > 1) {
      result.flatten_seconds =
          std::min(result.flatten_seconds, absl::ToDoubleSeconds(absl::Now() - flatten_start));
    }
    absl::Time start = absl::Now();
    const double cpu_start = cpu_now();
    publisher->Publish(flat);
    absl::MutexLock l(&mu);
    auto all = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return received[v] >= n; };
    if (!mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(300))) {
      std::fprintf(stderr, "timeout at version %d\n", v);
      break;
    }
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    const double cpu = cpu_now() - cpu_start;
    if (hashes[v].size() != 1 || *hashes[v].begin() != flat->hash) {
      std::fprintf(stderr, "HASH MISMATCH at version %d\n", v);
    }
    if (v > 1 && secs < result.seconds) {
      result.seconds = secs;
      result.cpu_seconds = cpu;
    }
  }
  for (auto& a : actors) a->Cancel();
  server->Shutdown(absl::Now() + absl::Seconds(1));  // also ends the children's streams
  for (const ChildActor& c : children) ::kill(c.pid, SIGTERM);
  for (auto& t : threads) t.join();
  for (const ChildActor& c : children) ::waitpid(c.pid, nullptr, 0);
  publisher->Shutdown();
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_retain_freed_memory)) rlhf::RetainFreedMemory();  // as rlhf-actor
  if (!absl::GetFlag(FLAGS_child_learner_address).empty()) return RunChildActor();
  auto config = rlhf::ModelConfigPreset(absl::GetFlag(FLAGS_preset));
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  torch::manual_seed(0);
  rlhf::TransformerLM model(*config);
  rlhf::weights::NamedTensors tensors = rlhf::ModelTensors(model);
  const int64_t bucket = int64_t{absl::GetFlag(FLAGS_bucket_mb)} << 20;
  auto probe = *rlhf::weights::Flatten(tensors, 0);
  const int64_t bytes = probe->total_bytes();
  probe.reset();
  std::printf("model %s: %.1f MB of weights, bucket %d MiB\n", absl::GetFlag(FLAGS_preset).c_str(),
              bytes / 1e6, absl::GetFlag(FLAGS_bucket_mb));
  std::printf("%-11s %-9s %6s %10s %12s %10s %11s %9s %10s %9s %10s %7s %10s %12s %6s\n",
              "transport", "in", "actors", "seconds", "ideal_s", "GB/s", "loop_GB/s", "ideal/t",
              "mem_GB/s", "mem/t", "flatten_s", "cpu_s", "mem_cpu_s", "cpu/mem_cpu", "cores");
  for (const auto& t : absl::GetFlag(FLAGS_transports)) {
    auto kind = t == "collective" ? rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE
                                  : rlhf::v1::WEIGHT_TRANSPORT_GRPC;
    for (const auto& placement : absl::GetFlag(FLAGS_placements)) {
      if (placement != "threads" && placement != "processes") {
        std::fprintf(stderr, "--placements: \"%s\" is neither threads nor processes\n",
                     placement.c_str());
        return 1;
      }
      for (const auto& a : absl::GetFlag(FLAGS_actors)) {
        const int n = std::stoi(a);
        const double bw = LoopbackBytesPerSecond();
        const Transfer mem = MemoryLoopback(bytes);
        const ConfigResult r = RunConfig(kind, placement == "processes", n, tensors, bucket,
                                         absl::GetFlag(FLAGS_reps));
        const double secs = r.seconds, cpu = r.cpu_seconds;
        const double moved = n * static_cast<double>(bytes);
        const double ideal = moved / bw;
        const double mem_ideal = moved / mem.bytes_per_second;
        const double mem_cpu = moved * mem.cpu_seconds_per_byte;
        std::printf(
            "%-11s %-9s %6d %10.3f %12.3f %10.2f %11.2f %9.2f %10.2f %9.2f %10.3f %7.3f %10.3f "
            "%12.2f %6.2f\n",
            t.c_str(), placement.c_str(), n, secs, ideal, moved / secs / 1e9, bw / 1e9,
            ideal / secs, mem.bytes_per_second / 1e9, mem_ideal / secs, r.flatten_seconds, cpu,
            mem_cpu, cpu / mem_cpu, cpu / secs);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
