# Many hosts on one machine (issue 18): network namespaces + veth + a bridge, real
# learner/servers on host A and actors on B and C with mutual TLS + token from the
# per-job CA; a link cut and restored mid-run. Root only (skips otherwise).
if(TARGET rlhf-learner AND TARGET rlhf-actor AND TARGET rlhf_reward_server_main
   AND TARGET rlhf_reference_server_main)
  rlhf_test(netns_test SOURCES netns_test.cc
    DEPS rlhf_launcher rlhf_learner_client rlhf_testing absl::strings absl::time
    LABELS integration e2e slow TIMEOUT 900)
  add_dependencies(netns_test rlhf-learner rlhf-actor rlhf_reward_server_main
    rlhf_reference_server_main)
endif()
