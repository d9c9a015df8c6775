# Bring your own task (issue 17): `rlhf run` on user-format files with no gold labeler,
# then with the Python example reward server as a scorer (examples/python_reward_server).
rlhf_test(run_userdata_e2e_test SOURCES run_userdata_e2e_test.cc monitoring_util.cc
  DEPS rlhf_launcher nlohmann_json::nlohmann_json yaml-cpp absl::strings absl::str_format
  TIMEOUT 900
  LABELS "e2e")
foreach(bin rlhf rlhf-reward-server rlhf-reference-server rlhf-learner rlhf-actor)
  if(TARGET ${bin})
    add_dependencies(run_userdata_e2e_test ${bin})
  endif()
endforeach()
# The Python example reward server against the real rlhf-reward-server (remote scorer).
add_test(NAME python_reward_example_test
  COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/python/test_example_reward_server.py)
set_tests_properties(python_reward_example_test PROPERTIES TIMEOUT 180 LABELS "python;integration"
  ENVIRONMENT "RLHF_SOURCE_DIR=${PROJECT_SOURCE_DIR};RLHF_BIN_DIR=${PROJECT_BINARY_DIR}/bin;RLHF_BUILD_DIR=${PROJECT_BINARY_DIR};OMP_NUM_THREADS=1")
