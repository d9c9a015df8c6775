// The chunked gRPC transport: the publisher only queues (header, snapshot) on each
// member's stream; the stream's writer sends the buckets. Receivers copy buckets into
// a preallocated flat buffer and verify the hash.
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/status_macros.h"
#include "services/weights/transport.h"

namespace rlhf::weights {
namespace {

class GrpcWeightPublisher : public WeightPublisher {
 public:
  explicit GrpcWeightPublisher(const WeightTransportOptions& options) : options_(options) {}

  void AddMember(const std::string& actor_id, DeliverFn deliver) override {
    absl::MutexLock lock(&mu_);
    members_[actor_id] = deliver;
    if (latest_) DeliverLocked(deliver);
  }
  void RemoveMember(const std::string& actor_id) override {
    absl::MutexLock lock(&mu_);
    members_.erase(actor_id);
  }
  void Publish(std::shared_ptr<const FlatWeights> weights) override {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    absl::Time start = absl::Now();
    latest_ = std::move(weights);
    ++stats_.versions_published;
    for (auto& [id, deliver] : members_) DeliverLocked(deliver);
    stats_.last_sync_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  }
  absl::Status WaitSynced(int64_t version, absl::Duration timeout) override {
    absl::MutexLock lock(&mu_);
    if (!latest_ || latest_->version < version) {
      return absl::FailedPreconditionError(absl::StrCat("version ", version, " not published"));
    }
    return absl::OkStatus();  // queued on every member's stream at Publish time
  }
  PublisherStats stats() const override {
    absl::MutexLock lock(&mu_);
    return stats_;
  }
  std::string rendezvous_address() const override { return ""; }
  void Shutdown() override {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    members_.clear();
  }

 private:
  void DeliverLocked(const DeliverFn& deliver) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    rlhf::v1::WeightsHeader header = MakeHeader(*latest_, options_.bucket_bytes);
    header.set_transport(rlhf::v1::WEIGHT_TRANSPORT_GRPC);
    deliver(header, latest_);
    ++stats_.syncs;
    stats_.bytes += latest_->total_bytes();
  }

  const WeightTransportOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, DeliverFn> members_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const FlatWeights> latest_ ABSL_GUARDED_BY(mu_);
  PublisherStats stats_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

class GrpcWeightReceiver : public WeightReceiver {
 public:
  absl::StatusOr<std::shared_ptr<FlatWeights>> Receive(
      const rlhf::v1::WeightsHeader& header, const NextBucketFn& next_bucket) override {
    RLHF_ASSIGN_OR_RETURN(auto flat, AllocateFor(header, &pool_));
    uint8_t* base = flat->buffer.data_ptr<uint8_t>();
    // The bytes are hashed as they are copied (one pass), and the copies run on a
    // second thread while this one reads the next bucket off the stream. Declared after
    // `flat` and `hasher`, `copies` is destroyed first: on an early return it waits for
    // the queued copies that still write into them.
    WeightsHasher hasher;
    CopyPipeline copies;
    BucketTarget target;
    target.base = base;
    target.total = header.total_bytes();
    target.copy = [&hasher](uint8_t* dst, const uint8_t* src, int64_t n) {
      hasher.CopyAndUpdate(dst, src, n);
    };
    target.pipeline = &copies;
    while (target.expected_offset < header.total_bytes()) {  // in order, back to back
      absl::StatusOr<int64_t> n = next_bucket(target);
      if (!n.ok()) {
        return absl::Status(n.status().code(),
                            absl::StrCat("weights version ", header.version().version(), ": ",
                                         n.status().message()));
      }
      target.expected_offset += *n;
    }
    copies.Wait();
    flat->hash = hasher.Finish();
    if (flat->hash != header.hash()) {
      return absl::DataLossError(absl::StrCat("weights version ", header.version().version(),
                                              ": hash ", flat->hash, " != header hash ",
                                              header.hash()));
    }
    return flat;
  }

 private:
  BufferPool pool_;  // the actor drops a version once applied: its buffer is reused
};

}  // namespace

std::unique_ptr<WeightPublisher> MakeGrpcWeightPublisher(const WeightTransportOptions& options) {
  return std::make_unique<GrpcWeightPublisher>(options);
}
std::unique_ptr<WeightReceiver> MakeGrpcWeightReceiver(const WeightTransportOptions&) {
  return std::make_unique<GrpcWeightReceiver>();
}

WeightTransportOptions OptionsFromConfig(const rlhf::v1::WeightsConfig& config) {
  WeightTransportOptions o;
  o.transport = config.transport() == rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE
                    ? rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE
                    : rlhf::v1::WEIGHT_TRANSPORT_GRPC;
  if (config.bucket_bytes() > 0) o.bucket_bytes = config.bucket_bytes();
  if (config.timeout_s() > 0) o.timeout_s = config.timeout_s();
  if (!config.store_host().empty()) o.store_host = config.store_host();
  o.store_port = config.store_port();
  o.gloo_interface = config.gloo_interface();
  return o;
}

absl::StatusOr<std::unique_ptr<WeightPublisher>> MakeWeightPublisher(
    const WeightTransportOptions& options) {
  if (options.bucket_bytes <= 0) return absl::InvalidArgumentError("weights.bucket_bytes must be > 0");
  if (options.transport == rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE) {
    return MakeCollectiveWeightPublisher(options);
  }
  return MakeGrpcWeightPublisher(options);
}

absl::StatusOr<std::unique_ptr<WeightReceiver>> MakeWeightReceiver(
    const WeightTransportOptions& options) {
  if (options.transport == rlhf::v1::WEIGHT_TRANSPORT_COLLECTIVE) {
    return MakeCollectiveWeightReceiver(options);
  }
  return MakeGrpcWeightReceiver(options);
}

}  // namespace rlhf::weights
