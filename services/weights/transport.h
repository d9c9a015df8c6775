// Weight distribution (design.md §4): ONE interface, two implementations chosen by
// WeightsConfig.transport.
//
//   grpc        the learner hands each actor's WatchWeights stream a header followed by
//               the flat buckets; elastic, works through any network path.
//   collective  c10d broadcast (ProcessGroupGloo on CPU; ProcessGroupNCCL when built
//               with RLHF_WITH_CUDA). The learner is rank 0 and hosts the TCPStore
//               rendezvous; the actors' WatchWeights streams carry only the header
//               (rank, world size, generation). When membership changes the group is
//               re-formed as a new generation under a new key prefix "rlhf/gen<N>/".
//
// Either way a version costs one control exchange (the header) and its data moves in
// bucket_bytes-sized pieces; receivers verify the snapshot hash, so every actor holds
// bitwise-identical weights for a version. Rendezvous and collectives time out after
// timeout_s with a message naming the missing peer.
//
// All c10d / CUDA specifics live in collective_transport.cc; nothing else includes them.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rlhf/v1/config.pb.h"
#include "rlhf/v1/learner.pb.h"
#include "services/weights/flat_weights.h"
#include "services/weights/wire.h"

namespace rlhf::weights {

struct WeightTransportOptions {
  rlhf::v1::WeightTransport transport = rlhf::v1::WEIGHT_TRANSPORT_GRPC;
  int64_t bucket_bytes = 16 << 20;  // bytes per data message / broadcast call
  int timeout_s = 60;               // rendezvous and each version's broadcast
  // Collective only. Learner: address the TCPStore listens on / advertises
  // (store_port 0 = pick a free port). Actors take the address from the header.
  std::string store_host = "127.0.0.1";
  int store_port = 0;
  // Collective only: the interface Gloo's device binds ("eth1"). Empty = the
  // RLHF_GLOO_IFNAME environment variable if set, else the learner binds store_host's
  // address and an actor the local address of its route to store_host (so that it
  // works across hosts with no configuration).
  std::string gloo_interface;
  bool use_cuda = false;            // NCCL on the current CUDA device (RLHF_WITH_CUDA)
};

// Fills options from the job config (defaults applied for zero fields).
WeightTransportOptions OptionsFromConfig(const rlhf::v1::WeightsConfig& config);

// Hands one version to one actor's control stream. Must not block: the learner's
// WatchWeights reactor queues it. `data` is set for the grpc transport (the stream sends
// the buckets after the header) and null for the collective one.
using DeliverFn = std::function<void(const rlhf::v1::WeightsHeader& header,
                                     std::shared_ptr<const FlatWeights> data)>;

struct PublisherStats {
  int64_t versions_published = 0;
  int64_t syncs = 0;               // completed deliveries (grpc: per actor; collective: rounds)
  int64_t bytes = 0;               // payload bytes handed to transports
  double last_sync_seconds = 0;    // collective: last broadcast round; grpc: last queueing
  int64_t generation = 0;          // collective group generation
  int64_t failures = 0;
  std::string last_error;
};

// Learner side. Thread-safe.
class WeightPublisher {
 public:
  virtual ~WeightPublisher() = default;
  // An actor's control stream opened. It is handed the latest version right away (grpc)
  // or at the next round (collective: the group is re-formed to include it).
  virtual void AddMember(const std::string& actor_id, DeliverFn deliver) = 0;
  virtual void RemoveMember(const std::string& actor_id) = 0;
  // Makes `weights` the latest version and distributes it. Never blocks on actors: the
  // collective rounds run on the publisher's own thread.
  virtual void Publish(std::shared_ptr<const FlatWeights> weights) = 0;
  // Blocks until every current member holds a version >= `version` as far as the
  // publisher can tell (collective: a round finished; grpc: queued), or the timeout.
  virtual absl::Status WaitSynced(int64_t version, absl::Duration timeout) = 0;
  virtual PublisherStats stats() const = 0;
  // "host:port" of the rendezvous store (collective), "" otherwise.
  virtual std::string rendezvous_address() const = 0;
  // Stops background work; later Publish calls are ignored.
  virtual void Shutdown() = 0;
};

// Reads the next bucket from the actor's WatchWeights stream (grpc transport) and copies
// its bytes into the target, or queues the copy on target.pipeline (services/weights/
// wire.h: CopyBucketMessage for a raw gRPC message, CopyBucket for a parsed one);
// returns the bucket's size. DataLoss when the bucket does not start at
// target.expected_offset or does not fit.
using NextBucketFn = std::function<absl::StatusOr<int64_t>(const BucketTarget& target)>;

// Actor side. Not thread-safe: one receiving thread per actor.
class WeightReceiver {
 public:
  virtual ~WeightReceiver() = default;
  // Obtains the version the header announces (reading buckets through `next_bucket`
  // or joining the broadcast) and verifies its hash.
  virtual absl::StatusOr<std::shared_ptr<FlatWeights>> Receive(
      const rlhf::v1::WeightsHeader& header, const NextBucketFn& next_bucket) = 0;
};

// Factories. The collective publisher starts the TCPStore server (Unavailable if the
// port is taken; Unimplemented when built without c10d Gloo headers).
absl::StatusOr<std::unique_ptr<WeightPublisher>> MakeWeightPublisher(
    const WeightTransportOptions& options);
absl::StatusOr<std::unique_ptr<WeightReceiver>> MakeWeightReceiver(
    const WeightTransportOptions& options);

// Implementation factories (used by the two above).
std::unique_ptr<WeightPublisher> MakeGrpcWeightPublisher(const WeightTransportOptions& options);
std::unique_ptr<WeightReceiver> MakeGrpcWeightReceiver(const WeightTransportOptions& options);
absl::StatusOr<std::unique_ptr<WeightPublisher>> MakeCollectiveWeightPublisher(
    const WeightTransportOptions& options);
absl::StatusOr<std::unique_ptr<WeightReceiver>> MakeCollectiveWeightReceiver(
    const WeightTransportOptions& options);

}  // namespace rlhf::weights
