# Monitoring tests (launch): promtool on the shipped files and on the config `rlhf run`
# writes; a short job under a real Prometheus (monitoring_prometheus_test).
if(NOT TARGET rlhf_launcher)
  add_subdirectory(${PROJECT_SOURCE_DIR}/tools/launcher ${PROJECT_BINARY_DIR}/tools/launcher)
endif()
rlhf_test(monitoring_promtool_test SOURCES monitoring_promtool_test.cc monitoring_util.cc
  DEPS rlhf_launcher nlohmann_json::nlohmann_json yaml-cpp prometheus-cpp::core absl::strings TIMEOUT 120)
if(NOT TARGET launcher_fake_child)
  add_subdirectory(${PROJECT_SOURCE_DIR}/tests/launcher ${PROJECT_BINARY_DIR}/tests/launcher)
endif()
rlhf_test(monitoring_prometheus_test SOURCES monitoring_prometheus_test.cc monitoring_util.cc
  DEPS rlhf_launcher nlohmann_json::nlohmann_json yaml-cpp absl::strings TIMEOUT 180)
add_dependencies(monitoring_prometheus_test launcher_fake_child rlhf)
