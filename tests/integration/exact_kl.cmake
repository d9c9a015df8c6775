# kl.estimator exact end to end (kl helper, issue 22): the DISABLED_ test of
# distributed_test.cc, run on its own with the e2e/slow labels (the plain
# distributed_test run skips it).
if(TARGET distributed_test)
  add_test(NAME distributed_exact_kl_test
    COMMAND distributed_test --gtest_also_run_disabled_tests
            --gtest_filter=DistributedTest.DISABLED_ExactKlOnTheRlPathStaysNearTarget
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
  set_tests_properties(distributed_exact_kl_test PROPERTIES TIMEOUT 600
    LABELS "integration;distributed;e2e;slow"
    ENVIRONMENT "RLHF_SOURCE_DIR=${PROJECT_SOURCE_DIR};RLHF_BIN_DIR=${PROJECT_BINARY_DIR}/bin;OMP_NUM_THREADS=1")
endif()
