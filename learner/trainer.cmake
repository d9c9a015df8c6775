# RL trainer (no gRPC): rlhf_trainer = Trainer + learner-state checkpoints + in-process
# loop; rlhf_trainer_config = rlhf.v1.RlConfig -> TrainerOptions (needs protobuf).
set(RLHF_TRAINER_SOURCES trainer.cc)
foreach(src learner_state.cc inprocess_loop.cc)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${src})
    list(APPEND RLHF_TRAINER_SOURCES ${src})
  endif()
endforeach()
rlhf_library(rlhf_trainer
  SOURCES ${RLHF_TRAINER_SOURCES}
  DEPS rlhf_rl rlhf_model rlhf::torch rlhf_status absl::time absl::strings
       nlohmann_json::nlohmann_json)
rlhf_torch_pch(rlhf_trainer)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/trainer_config.cc)
  rlhf_library(rlhf_trainer_config
    SOURCES trainer_config.cc
    DEPS rlhf_trainer rlhf_proto rlhf_train rlhf_data)
  # no PCH: protobuf targets add -pthread, which invalidates the shared torch PCH
endif()
# The whole pipeline on the built-in task in one process (tests, bench, debugging).
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/rl_experiment.cc AND TARGET rlhf_train)
  rlhf_library(rlhf_rl_experiment
    SOURCES rl_experiment.cc
    DEPS rlhf_trainer rlhf_train rlhf_data)
  rlhf_torch_pch(rlhf_rl_experiment)
endif()
