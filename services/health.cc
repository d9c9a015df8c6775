#include "services/health.h"

#include <grpcpp/client_context.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/synchronization/notification.h"
#include "services/grpc_status.h"

namespace rlhf::services {

absl::StatusOr<HealthStatus> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                         const std::string& service, absl::Time deadline) {
  // HealthCheckRequest { string service = 1; }: tag 0x0a, length, bytes.
  if (service.size() > 127) return absl::InvalidArgumentError("service: name too long");
  std::string wire;
  if (!service.empty()) {
    wire.push_back('\x0a');
    wire.push_back(static_cast<char>(service.size()));
    wire += service;
  }
  grpc::Slice slice(wire);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  grpc::GenericStub stub(channel);
  absl::Notification done;
  grpc::Status rpc_status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) {
                   rpc_status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!rpc_status.ok()) return FromGrpcStatus(rpc_status);
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::InternalError("health: unreadable response");
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse { ServingStatus status = 1; }: tag 0x08, varint (< 128 here).
  if (bytes.empty()) return HealthStatus::kUnknown;
  if (bytes.size() != 2 || bytes[0] != '\x08') {
    return absl::InternalError("health: unexpected response encoding");
  }
  return static_cast<HealthStatus>(bytes[1]);
}

}  // namespace rlhf::services
