# Issue 23: fault injection during a real test-sized `rlhf run` (data -> sft -> rl with
# the gold scorer): kill -9 of the reward server, the reference server, one actor and
# the learner; the job finishes and the learner's accounting holds.
rlhf_test(fault_e2e_test SOURCES fault_e2e_test.cc monitoring_util.cc
  DEPS rlhf_launcher rlhf_proto nlohmann_json::nlohmann_json absl::strings TIMEOUT 600
  LABELS e2e)
foreach(bin rlhf rlhf-reward-server rlhf-reference-server rlhf-learner rlhf-actor)
  if(TARGET ${bin})
    add_dependencies(fault_e2e_test ${bin})
  endif()
endforeach()

# --help of every server binary lists its flags (issue 23 item 9).
rlhf_test(server_help_test SOURCES server_help_test.cc DEPS absl::strings)
foreach(bin rlhf-reward-server rlhf-reference-server rlhf-learner rlhf-actor)
  if(TARGET ${bin})
    add_dependencies(server_help_test ${bin})
  endif()
endforeach()
