# `rlhf run` end to end (launch). run_launcher_test drives the real `rlhf run` binary
# over stand-in children (launcher_fake_child symlinked as rlhf-learner, rlhf-actor,
# ...): completion, SIGTERM with nothing left behind, a killed actor restarted, a
# crashed learner failing the job, config errors naming the YAML path.
if(NOT TARGET launcher_fake_child)
  add_subdirectory(${PROJECT_SOURCE_DIR}/tests/launcher ${PROJECT_BINARY_DIR}/tests/launcher)
endif()
rlhf_test(run_launcher_test SOURCES run_launcher_test.cc
  DEPS rlhf_launcher rlhf_config nlohmann_json::nlohmann_json absl::strings TIMEOUT 240)
add_dependencies(run_launcher_test launcher_fake_child rlhf)

# The real pipeline at test size: data -> sft -> rm -> rl (real servers, learner, two
# actors, a real Prometheus) -> eval; checks summary.json, metrics.jsonl, and the final
# /metrics of every process (promtool check metrics; every metric the dashboard and
# alert rules use is exposed).
rlhf_test(run_e2e_test SOURCES run_e2e_test.cc monitoring_util.cc
  DEPS rlhf_launcher nlohmann_json::nlohmann_json yaml-cpp absl::strings TIMEOUT 420
  LABELS e2e)
foreach(bin rlhf rlhf-reward-server rlhf-reference-server rlhf-learner rlhf-actor)
  if(TARGET ${bin})
    add_dependencies(run_e2e_test ${bin})
  endif()
endforeach()
