# LearnerService (issue 6): handler logic (no gRPC), the gRPC adapter, the training /
# weight-publishing loop, clients (real + fake) and the rlhf-learner binary.
rlhf_library(rlhf_learner_handler
  SOURCES learner_handler.cc
  DEPS rlhf_proto absl::status absl::statusor absl::strings absl::str_format
       absl::synchronization absl::time absl::random_random)
