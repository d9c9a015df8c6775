# Multi-process distributed RL (dist helper): real rlhf-learner, rlhf-actor,
# rlhf-reward-server and rlhf-reference-server binaries on loopback sockets.
if(TARGET rlhf-learner AND TARGET rlhf-actor AND TARGET rlhf_reward_server_main
   AND TARGET rlhf_reference_server_main)
  rlhf_test(distributed_test SOURCES distributed_test.cc
    DEPS rlhf_learner_service rlhf_learner_client rlhf_util rlhf_testing absl::strings absl::time LABELS integration distributed
    TIMEOUT 600)
  add_dependencies(distributed_test rlhf-learner rlhf-actor rlhf_reward_server_main
    rlhf_reference_server_main rlhf)
endif()
