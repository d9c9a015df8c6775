# LearnerService tests (distributed helper): handler logic with an injectable clock.
rlhf_test(learner_handler_test SOURCES learner_handler_test.cc
  DEPS rlhf_learner_handler LABELS learner)
if(TARGET rlhf_learner_service AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/learner_service_test.cc)
  rlhf_test(learner_service_test SOURCES learner_service_test.cc
    DEPS rlhf_learner_service LABELS learner TIMEOUT 300)
endif()
