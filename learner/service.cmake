# LearnerService: handler logic (no gRPC), the gRPC adapter and server, the client (real
# + fake) and the rlhf-learner binary.
rlhf_library(rlhf_learner_handler
  SOURCES learner_handler.cc state_store.cc
  DEPS rlhf_proto rlhf_util absl::status absl::statusor absl::strings absl::str_format
       absl::synchronization absl::time absl::random_random)
# What another component links to talk to a learner: the interface, the gRPC client and
# (fake_learner_client.h) the in-process fake over a LearnerHandler.
rlhf_library(rlhf_learner_client
  SOURCES learner_client.cc
  DEPS rlhf_learner_handler rlhf_services rlhf_weights_wire rlhf_proto)
rlhf_library(rlhf_learner_service
  SOURCES learner_service.cc learner_server.cc
  DEPS rlhf_learner_handler rlhf_trainer rlhf_weights rlhf_services rlhf_model rlhf_proto
       prometheus-cpp::core)
rlhf_binary(rlhf-learner SOURCES main.cc
  DEPS rlhf_learner_service rlhf_trainer_config rlhf_config rlhf_train rlhf_data rlhf_tokenizer
       absl::flags absl::flags_parse)
