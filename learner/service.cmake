# LearnerService (issue 6): handler logic (no gRPC), the gRPC adapter, the training /
# weight-publishing loop, clients (real + fake) and the rlhf-learner binary.
rlhf_library(rlhf_learner_handler
  SOURCES learner_handler.cc
  DEPS rlhf_proto absl::status absl::statusor absl::strings absl::str_format
       absl::synchronization absl::time absl::random_random)
rlhf_library(rlhf_learner_service
  SOURCES learner_service.cc learner_server.cc learner_client.cc
  DEPS rlhf_learner_handler rlhf_trainer rlhf_weights rlhf_services rlhf_model rlhf_proto
       prometheus-cpp::core)
if(TARGET rlhf_trainer_config AND TARGET rlhf_config AND TARGET rlhf_train AND TARGET rlhf_data)
  rlhf_binary(rlhf-learner SOURCES main.cc
    DEPS rlhf_learner_service rlhf_trainer_config rlhf_config rlhf_train rlhf_data
         absl::flags absl::flags_parse)
endif()
