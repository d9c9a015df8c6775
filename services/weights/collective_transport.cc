// The c10d broadcast transport. This file is the only place in the project that
// includes c10d (and, behind RLHF_WITH_CUDA, CUDA/NCCL); the same code builds against
// LibTorch 1.13 (CPU, Gloo) and 2.x (CUDA, NCCL).
//
// Round protocol for one version (generation N, learner = rank 0):
//   1. membership changed since the last round -> N += 1 and the group is re-formed
//      under the key prefix "rlhf/gen<N>/" of the learner's TCPStore;
//   2. every member's control stream gets the header (rank, world size, generation);
//   3. a new generation: each actor sets "ready/<rank>" = its id and constructs its
//      ProcessGroup; the learner waits for all ready keys (naming the missing ones on
//      timeout) and constructs rank 0;
//   4. the flat buffer is broadcast from rank 0 in bucket_bytes slices.
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include <c10/util/Logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "core/model/torch_compat.h"
#include "core/status_macros.h"
#include "services/weights/transport.h"

#if __has_include(<gloo/algorithm.h>)
#define RLHF_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(RLHF_WITH_CUDA)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#else
#define RLHF_HAVE_GLOO 0
#endif

namespace rlhf::weights {

#if RLHF_HAVE_GLOO
namespace {

using StorePtr = c10::intrusive_ptr<::c10d::Store>;
// ProcessGroupGloo/NCCL are c10d::Backends from LibTorch 2.0 on, CPU build or not
// (core/model/torch_compat.h).
#if RLHF_C10D_BACKEND_IS_PROCESS_GROUP
using GroupPtr = c10::intrusive_ptr<::c10d::ProcessGroup>;
#else
using GroupPtr = c10::intrusive_ptr<::c10d::Backend>;
#endif

std::string GenPrefix(int64_t generation) { return absl::StrCat("rlhf/gen", generation, "/"); }

// The local IP address this host would use to reach host:port: a connected UDP socket
// sends nothing, but the kernel picks the route and the source address. "" on failure.
std::string LocalAddressToward(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return "";
  std::string out;
  for (addrinfo* ai = res; ai != nullptr && out.empty(); ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    char buf[INET6_ADDRSTRLEN] = {0};
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
        ::getnameinfo(reinterpret_cast<sockaddr*>(&local), len, buf, sizeof(buf), nullptr, 0,
                      NI_NUMERICHOST) == 0) {
      out = buf;
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return out;
}

// Gloo's device: the configured interface; else rank 0 (the learner) binds the store's
// address and other ranks the local address of their route to it. (Binding the store's
// address on an actor's host, as every rank once did, fails off that host.)
GroupPtr MakeGroup(const StorePtr& store, int rank, int world, std::chrono::milliseconds timeout,
                   const WeightTransportOptions& options, const std::string& store_host,
                   int store_port) {
#if defined(RLHF_WITH_CUDA)
  if (options.use_cuda) {
    auto opts = ::c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    return c10::make_intrusive<::c10d::ProcessGroupNCCL>(store, rank, world, opts);
  }
#endif
  auto opts = ::c10d::ProcessGroupGloo::Options::create(timeout);
  std::string ifname = options.gloo_interface;
  if (const char* env = std::getenv("RLHF_GLOO_IFNAME"); ifname.empty() && env != nullptr) {
    ifname = env;
  }
  if (!ifname.empty()) {
    opts->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else {
    std::string local = rank == 0 ? store_host : LocalAddressToward(store_host, store_port);
    if (local.empty()) local = store_host;
    opts->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname(local));
  }
  return c10::make_intrusive<::c10d::ProcessGroupGloo>(store, rank, world, opts);
}

// Broadcasts `buffer` (1-D uint8) from rank 0 in bucket-sized slices: all slices are
// issued back to back, then waited on, so the buckets pipeline. `on_bucket(offset, n)`
// (optional) runs as each slice completes, in order, while later ones are in flight.
void BroadcastBuckets(const GroupPtr& group, torch::Tensor buffer, int64_t bucket_bytes,
                      std::chrono::milliseconds timeout,
                      const std::function<void(int64_t, int64_t)>& on_bucket = nullptr) {
  std::vector<c10::intrusive_ptr<::c10d::Work>> works;
  const int64_t total = buffer.numel();
  for (int64_t off = 0; off < total; off += bucket_bytes) {
    std::vector<at::Tensor> slice{buffer.narrow(0, off, std::min(bucket_bytes, total - off))};
    ::c10d::BroadcastOptions opts;
    opts.rootRank = 0;
    opts.timeout = timeout;
    works.push_back(group->broadcast(slice, opts));
  }
  for (size_t i = 0; i < works.size(); ++i) {
    works[i]->wait(timeout);
    if (on_bucket) {
      const int64_t off = static_cast<int64_t>(i) * bucket_bytes;
      on_bucket(off, std::min(bucket_bytes, total - off));
    }
  }
}

torch::Tensor ToDevice(const torch::Tensor& t, bool use_cuda) {
#if defined(RLHF_WITH_CUDA)
  if (use_cuda) return t.to(torch::kCUDA);
#endif
  (void)use_cuda;
  return t;
}

class CollectivePublisher : public WeightPublisher {
 public:
  CollectivePublisher(const WeightTransportOptions& options, StorePtr store, int port)
      : options_(options), store_(std::move(store)), port_(port),
        thread_([this] { Loop(); }) {}
  ~CollectivePublisher() override { Shutdown(); }

  void AddMember(const std::string& actor_id, DeliverFn deliver) override {
    absl::MutexLock lock(&mu_);
    members_[actor_id] = std::move(deliver);
    dirty_ = true;
  }
  void RemoveMember(const std::string& actor_id) override {
    absl::MutexLock lock(&mu_);
    if (members_.erase(actor_id) > 0) dirty_ = true;
  }
  void Publish(std::shared_ptr<const FlatWeights> weights) override {
    absl::MutexLock lock(&mu_);
    latest_ = std::move(weights);
    ++stats_.versions_published;
  }
  absl::Status WaitSynced(int64_t version, absl::Duration timeout) override {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return shut_down_ || (synced_version_ >= version && !dirty_);
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "weights version ", version, " not broadcast within ", absl::FormatDuration(timeout),
          stats_.last_error.empty() ? "" : absl::StrCat("; last error: ", stats_.last_error)));
    }
    return absl::OkStatus();
  }
  PublisherStats stats() const override {
    absl::MutexLock lock(&mu_);
    return stats_;
  }
  std::string rendezvous_address() const override {
    return absl::StrCat(options_.store_host, ":", port_);
  }
  void Shutdown() override {
    {
      absl::MutexLock lock(&mu_);
      if (shut_down_) return;
      shut_down_ = true;
    }
    if (thread_.joinable()) thread_.join();
    group_.reset();
  }

 private:
  struct Round {
    std::shared_ptr<const FlatWeights> weights;
    std::vector<std::pair<std::string, DeliverFn>> members;
    int64_t generation = 0;
    bool new_generation = false;
  };

  void Loop() {
    for (;;) {
      Round round;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return shut_down_ ||
                 (latest_ && (latest_->version > synced_version_ || dirty_));
        };
        mu_.Await(absl::Condition(&ready));
        if (shut_down_) return;
        if (dirty_) {
          ++generation_;
          dirty_ = false;
          round.new_generation = true;
        }
        round.weights = latest_;
        round.generation = generation_;
        stats_.generation = generation_;
        for (auto& [id, fn] : members_) round.members.emplace_back(id, fn);
      }
      absl::Status status = RunRound(round);
      absl::MutexLock lock(&mu_);
      if (status.ok()) {
        synced_version_ = round.weights->version;
        if (!round.members.empty()) {
          ++stats_.syncs;
          stats_.bytes += round.weights->total_bytes();
        }
      } else {
        ++stats_.failures;
        stats_.last_error = std::string(status.message());
        LOG(WARNING) << "weights: " << status;
        dirty_ = true;  // re-form the group (a new generation) for the next round
      }
    }
  }

  absl::Status RunRound(const Round& round) {
    if (round.new_generation) group_.reset();
    if (round.members.empty()) return absl::OkStatus();
    const int world = static_cast<int>(round.members.size()) + 1;
    if (round.new_generation) {
      std::vector<std::string> names;
      for (const auto& m : round.members) names.push_back(m.first);
      LOG(INFO) << "weights: collective generation " << round.generation << " (version "
                << round.weights->version << "): " << absl::StrJoin(names, ", ");
    }
    const auto timeout = std::chrono::milliseconds(int64_t{options_.timeout_s} * 1000);
    absl::Time start = absl::Now();
    for (size_t i = 0; i < round.members.size(); ++i) {
      rlhf::v1::WeightsHeader header = MakeHeader(*round.weights, options_.bucket_bytes);
      header.set_transport(rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE);
      auto* g = header.mutable_group();
      g->set_store_host(options_.store_host);
      g->set_store_port(port_);
      g->set_generation(round.generation);
      g->set_rank(static_cast<int>(i) + 1);
      g->set_world_size(world);
      g->set_timeout_s(options_.timeout_s);
      round.members[i].second(header, nullptr);
    }
    auto prefix = c10::make_intrusive<::c10d::PrefixStore>(GenPrefix(round.generation), store_);
    if (!group_) {
      std::vector<std::string> keys;
      for (int r = 1; r < world; ++r) keys.push_back(absl::StrCat("ready/", r));
      // Poll rather than block: a member leaving or a shutdown during the wait aborts
      // this generation at once instead of after the timeout.
      const absl::Time until = absl::Now() + absl::Seconds(options_.timeout_s);
      absl::Status waited = absl::DeadlineExceededError("rendezvous");
      while (absl::Now() < until) {
        bool all = false;
        RLHF_RETURN_IF_ERROR(TorchCall([&] { all = prefix->check(keys); }, "rendezvous"));
        if (all) {
          waited = absl::OkStatus();
          break;
        }
        {
          absl::MutexLock lock(&mu_);
          if (shut_down_) return absl::CancelledError("publisher shut down");
          // A member that left can never join: re-form without waiting it out. (A new
          // member does not abort: the others may already be inside the rendezvous.)
          for (const auto& m : round.members) {
            if (members_.count(m.first) == 0) {
              return absl::AbortedError(absl::StrCat("collective generation ", round.generation,
                                                     ": ", m.first, " left during rendezvous"));
            }
          }
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
      if (!waited.ok()) {
        std::vector<std::string> missing;
        for (int r = 1; r < world; ++r) {
          bool present = false;
          (void)TorchCall([&] { present = prefix->check({keys[r - 1]}); });
          if (!present) missing.push_back(absl::StrCat(round.members[r - 1].first, " (rank ", r, ")"));
        }
        return absl::DeadlineExceededError(absl::StrCat(
            "collective rendezvous generation ", round.generation, ": peer(s) ",
            absl::StrJoin(missing, ", "), " did not join within ", options_.timeout_s, " s"));
      }
      RLHF_ASSIGN_OR_RETURN(group_, TorchCall(
                                        [&] {
                                          return MakeGroup(prefix, 0, world, timeout, options_,
                                                           options_.store_host, port_);
                                        },
                                        "creating process group"));
    }
    torch::Tensor buffer = ToDevice(round.weights->buffer, options_.use_cuda);
    absl::Status sent = TorchCall([&] {
      BroadcastBuckets(group_, buffer, options_.bucket_bytes, timeout);
    }, "broadcast");
    if (!sent.ok()) {
      group_.reset();
      std::vector<std::string> names;
      for (size_t i = 0; i < round.members.size(); ++i) {
        names.push_back(absl::StrCat(round.members[i].first, "=rank", i + 1));
      }
      return absl::UnavailableError(absl::StrCat(
          "broadcast of weights version ", round.weights->version, " (generation ",
          round.generation, ", members ", absl::StrJoin(names, ","), ") failed: ",
          sent.message()));
    }
    absl::MutexLock lock(&mu_);
    stats_.last_sync_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return absl::OkStatus();
  }

  const WeightTransportOptions options_;
  const StorePtr store_;
  const int port_;
  GroupPtr group_;  // owned by the round thread
  mutable absl::Mutex mu_;
  std::map<std::string, DeliverFn> members_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const FlatWeights> latest_ ABSL_GUARDED_BY(mu_);
  int64_t synced_version_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  PublisherStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts after every member above is constructed
};

class CollectiveReceiver : public WeightReceiver {
 public:
  explicit CollectiveReceiver(const WeightTransportOptions& options) : options_(options) {}

  absl::StatusOr<std::shared_ptr<FlatWeights>> Receive(
      const rlhf::v1::WeightsHeader& header, const NextBucketFn&) override {
    absl::Status status = ReceiveInto(header);
    if (!status.ok()) {
      group_.reset();
      generation_ = -1;
      return status;
    }
    return flat_;
  }

 private:
  absl::Status ReceiveInto(const rlhf::v1::WeightsHeader& header) {
    const auto& g = header.group();
    if (g.world_size() < 2 || g.rank() < 1 || g.rank() >= g.world_size()) {
      return absl::InvalidArgumentError(absl::StrCat("weights header: bad group rank ", g.rank(),
                                                     " of ", g.world_size()));
    }
    const auto timeout = std::chrono::milliseconds(int64_t{std::max(1, g.timeout_s())} * 1000);
    std::string store_addr = absl::StrCat(g.store_host(), ":", g.store_port());
    if (!store_ || store_addr != store_addr_) {
      group_.reset();
      RLHF_ASSIGN_OR_RETURN(store_, TorchCall([&]() -> StorePtr {
        ::c10d::TCPStoreOptions o;
        o.port = static_cast<uint16_t>(g.store_port());
        o.isServer = false;
        o.waitWorkers = false;
        o.timeout = timeout;
        return c10::make_intrusive<::c10d::TCPStore>(g.store_host(), o);
      }, "connecting to the learner's rendezvous store"));
      store_addr_ = store_addr;
      generation_ = -1;
    }
    if (!group_ || generation_ != g.generation()) {
      group_.reset();
      auto prefix = c10::make_intrusive<::c10d::PrefixStore>(GenPrefix(g.generation()), store_);
      RLHF_RETURN_IF_ERROR(TorchCall([&] {
        std::string rank = std::to_string(g.rank());
        prefix->set(absl::StrCat("ready/", g.rank()), std::vector<uint8_t>(rank.begin(), rank.end()));
      }, "rendezvous"));
      RLHF_ASSIGN_OR_RETURN(group_,
                            TorchCall(
                                [&] {
                                  return MakeGroup(prefix, g.rank(), g.world_size(), timeout,
                                                   options_, g.store_host(), g.store_port());
                                },
                                absl::StrCat("joining collective generation ", g.generation(),
                                             " (learner at ", store_addr, ")")
                                    .c_str()));
      generation_ = g.generation();
    }
    flat_.reset();  // lets the pool hand its buffer out again once the actor dropped it
    RLHF_ASSIGN_OR_RETURN(flat_, AllocateFor(header, &pool_));
    torch::Tensor buffer = ToDevice(flat_->buffer, options_.use_cuda);
    // On CPU each bucket is hashed as it lands, overlapping the rest of the broadcast.
    WeightsHasher hasher;
    const uint8_t* base = flat_->data();
    std::function<void(int64_t, int64_t)> on_bucket;
    if (!options_.use_cuda) on_bucket = [&](int64_t off, int64_t n) { hasher.Update(base + off, n); };
    RLHF_RETURN_IF_ERROR(TorchCall([&] {
      BroadcastBuckets(group_, buffer, header.bucket_bytes(), timeout, on_bucket);
    }, absl::StrCat("receiving weights version ", header.version().version(),
                    " from rank 0 (learner at ", store_addr, ")").c_str()));
    if (options_.use_cuda) {
      flat_->buffer = buffer.to(torch::kCPU);
      flat_->hash = header.hash();
      return VerifyHash(*flat_, header);
    }
    flat_->hash = hasher.Finish();
    if (flat_->hash != header.hash()) {
      return absl::DataLossError(absl::StrCat("weights version ", header.version().version(),
                                              ": hash ", flat_->hash, " != header hash ",
                                              header.hash()));
    }
    return absl::OkStatus();
  }

  const WeightTransportOptions options_;
  StorePtr store_;
  std::string store_addr_;
  GroupPtr group_;
  int64_t generation_ = -1;
  BufferPool pool_;
  std::shared_ptr<FlatWeights> flat_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WeightPublisher>> MakeCollectiveWeightPublisher(
    const WeightTransportOptions& options) {
  StorePtr store;
  RLHF_ASSIGN_OR_RETURN(store, TorchCall([&]() -> StorePtr {
    ::c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(options.store_port);
    o.isServer = true;
    o.waitWorkers = false;
    o.timeout = std::chrono::milliseconds(int64_t{options.timeout_s} * 1000);
    return c10::make_intrusive<::c10d::TCPStore>(options.store_host, o);
  }, "starting the rendezvous TCPStore"));
  const int port = static_cast<::c10d::TCPStore*>(store.get())->getPort();
  return std::unique_ptr<WeightPublisher>(new CollectivePublisher(options, store, port));
}

absl::StatusOr<std::unique_ptr<WeightReceiver>> MakeCollectiveWeightReceiver(
    const WeightTransportOptions& options) {
  return std::unique_ptr<WeightReceiver>(new CollectiveReceiver(options));
}

#else  // !RLHF_HAVE_GLOO

absl::StatusOr<std::unique_ptr<WeightPublisher>> MakeCollectiveWeightPublisher(
    const WeightTransportOptions&) {
  return absl::UnimplementedError("collective weights: built without c10d Gloo (libgloo-dev)");
}
absl::StatusOr<std::unique_ptr<WeightReceiver>> MakeCollectiveWeightReceiver(
    const WeightTransportOptions&) {
  return absl::UnimplementedError("collective weights: built without c10d Gloo (libgloo-dev)");
}

#endif

}  // namespace rlhf::weights
