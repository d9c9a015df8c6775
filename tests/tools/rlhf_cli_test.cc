// End-to-end tests of the `rlhf` command line: data -> sft -> rm -> eval -> rl at toy sizes,
// flag and data errors, determinism of `rlhf data`.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

RunResult Rlhf(const std::string& args) {
  const char* bin_dir = std::getenv("RLHF_BIN_DIR");
  const std::string bin = std::string(bin_dir != nullptr ? bin_dir : "build/bin") + "/rlhf";
  const std::string cmd = bin + " " + args + " 2>&1";
  RunResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::string& Dir() {
  static const std::string* dir = new std::string(::testing::TempDir() + "/rlhf_cli");
  return *dir;
}

const char* kSmallData =
    "--num_sft=64 --num_sft_heldout=16 --num_rank=24 --num_rank_heldout=8 "
    "--num_rl_train=16 --num_rl_heldout=8 --num_pretrain=16";

TEST(RlhfCliTest, UsageAndUnknownCommand) {
  RunResult r = Rlhf("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("sft"), std::string::npos);
  r = Rlhf("bogus");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown command \"bogus\""), std::string::npos);
}

TEST(RlhfCliTest, DataIsDeterministicGivenSeed) {
  RunResult a = Rlhf("data --out " + Dir() + "/d1 --seed 5 " + kSmallData);
  RunResult b = Rlhf("data --out " + Dir() + "/d2 --seed 5 " + kSmallData);
  RunResult c = Rlhf("data --out " + Dir() + "/d3 --seed 6 " + kSmallData);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  ASSERT_EQ(c.exit_code, 0) << c.output;
  for (const char* f : {"sft.jsonl", "sft_heldout.jsonl", "rank.jsonl", "rank_heldout.jsonl",
                        "rl_train.jsonl", "rl_heldout.jsonl", "pretrain.jsonl"}) {
    const std::string one = Slurp(Dir() + "/d1/" + f);
    EXPECT_FALSE(one.empty()) << f;
    EXPECT_EQ(one, Slurp(Dir() + "/d2/" + f)) << f;
  }
  EXPECT_NE(Slurp(Dir() + "/d1/rank.jsonl"), Slurp(Dir() + "/d3/rank.jsonl"));
  RunResult bad = Rlhf("data --task nope --out " + Dir() + "/d4");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("--task"), std::string::npos);
}

// The shipped job files are valid end to end as far as their data stage (a broken
// example config is the first thing a user meets).
TEST(RlhfCliTest, ShippedJobConfigsValidateAndGenerateTheirData) {
  const char* src = std::getenv("RLHF_SOURCE_DIR");
  for (const char* name : {"quickstart", "large"}) {
    SCOPED_TRACE(name);
    const std::string run_dir = Dir() + "/shipped_" + name;
    RunResult r = Rlhf(std::string("run --config ") + (src != nullptr ? src : ".") +
                       "/deploy/local/" + name + ".yaml --stages data --set run_dir=" + run_dir);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_FALSE(Slurp(run_dir + "/data/rl_heldout.jsonl").empty());
    EXPECT_FALSE(Slurp(run_dir + "/config.yaml").empty());
  }
  // A setting the job cannot run is refused up front, naming the field, before any stage.
  RunResult bad = Rlhf(std::string("run --config ") + (src != nullptr ? src : ".") +
                       "/deploy/local/quickstart.yaml --stages data --set run_dir=" + Dir() +
                       "/shipped_bad,rl.samples_per_prompt=1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("rl.samples_per_prompt: RLOO and GRPO need >= 2"), std::string::npos)
      << bad.output;
  EXPECT_TRUE(Slurp(Dir() + "/shipped_bad/data/rl_heldout.jsonl").empty());
}

TEST(RlhfCliTest, MalformedDataIsAnErrorNamingFileLineAndField) {
  const std::string path = Dir() + "/bad_rank.jsonl";
  std::ofstream(path) << R"({"prompt":"p","responses":["a","b"],"ranking":[1,0]})" << "\n"
                      << R"({"prompt":"p","responses":["a","b"],"ranking":["x",0]})" << "\n";
  RunResult r = Rlhf("rm --data " + path + " --out " + Dir() + "/rm_bad --steps 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(path + ":2: field 'ranking': expected array of integers"),
            std::string::npos)
      << r.output;
  r = Rlhf("sft --out " + Dir() + "/x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--data is required"), std::string::npos);
}

TEST(RlhfCliTest, SftRmEvalEndToEnd) {
  const std::string d = Dir() + "/e2e";
  std::filesystem::remove_all(d);  // a previous run's checkpoints would be resumed/refused
  ASSERT_EQ(Rlhf("data --out " + d + "/data --seed 1 " + kSmallData).exit_code, 0);
  RunResult sft = Rlhf("sft --data " + d + "/data/sft.jsonl --heldout " + d +
                       "/data/sft_heldout.jsonl --out " + d + "/sft --steps 4 --batch_size 4 " +
                       "--log_every 2 --json_out " + d + "/sft.json");
  ASSERT_EQ(sft.exit_code, 0) << sft.output;
  // The progress line: step, loss, tokens/s, ETA.
  EXPECT_NE(sft.output.find("sft step 2/4 loss "), std::string::npos) << sft.output;
  EXPECT_NE(sft.output.find(" tok/s "), std::string::npos);
  EXPECT_NE(sft.output.find(" eta "), std::string::npos);
  auto sft_json = nlohmann::json::parse(Slurp(d + "/sft.json"));
  EXPECT_EQ(sft_json["steps"].get<int>(), 4);
  EXPECT_GT(sft_json["heldout_loss"].get<double>(), 0);

  RunResult rm = Rlhf("rm --init " + d + "/sft --data " + d + "/data/rank.jsonl --heldout " + d +
                      "/data/rank_heldout.jsonl --out " + d + "/rm --steps 3 --batch_size 2 " +
                      "--json_out " + d + "/rm.json");
  ASSERT_EQ(rm.exit_code, 0) << rm.output;
  auto rm_json = nlohmann::json::parse(Slurp(d + "/rm.json"));
  EXPECT_GE(rm_json["heldout_accuracy"].get<double>(), 0.0);
  EXPECT_LE(rm_json["heldout_accuracy"].get<double>(), 1.0);
  auto rm_config = nlohmann::json::parse(Slurp(d + "/rm/config.json"));
  EXPECT_TRUE(rm_config["metadata"].contains("reward_mean"));
  EXPECT_GT(rm_config["metadata"]["reward_std"].get<double>(), 0);

  RunResult ev = Rlhf("eval --policy " + d + "/sft --reference " + d + "/sft --rm " + d +
                      "/rm --prompts " + d + "/data/rl_heldout.jsonl --max_new_tokens 16 " +
                      "--show 2 --json_out " + d + "/eval.json");
  ASSERT_EQ(ev.exit_code, 0) << ev.output;
  EXPECT_NE(ev.output.find("gold "), std::string::npos);
  auto ev_json = nlohmann::json::parse(Slurp(d + "/eval.json"));
  EXPECT_EQ(ev_json["n"].get<int>(), 8);
  EXPECT_GE(ev_json["gold_mean"].get<double>(), 0.0);
  EXPECT_LE(ev_json["gold_mean"].get<double>(), 1.0);
  // Policy == reference: the exact KL is zero.
  EXPECT_NEAR(ev_json["kl_mean"].get<double>(), 0.0, 1e-5);
  EXPECT_EQ(ev_json["samples"].size(), 8u);

  // `rlhf rl`: the job's RL stage in one process, with PPO-ptx on, checkpoints in
  // <run_dir>/learner; a second run refuses to overwrite them; --resume continues.
  const std::string job =
      "--set run_dir=" + d + "/job,model.sft_checkpoint=" + d + "/sft,model.rm_checkpoint=" + d +
      "/rm,data.dir=" + d + "/data,rl.prompts_per_step=2,rl.samples_per_prompt=2," +
      "rl.ptx_coef=0.5,rl.ptx_batch_size=2,rl.checkpoint_every=2,sampling.max_new_tokens=8";
  RunResult rl = Rlhf("rl " + job + ",rl.steps=4 --json_out " + d + "/rl.json");
  ASSERT_EQ(rl.exit_code, 0) << rl.output;
  EXPECT_NE(rl.output.find("rl reinforce step 4/4 "), std::string::npos) << rl.output;
  EXPECT_NE(rl.output.find(" ETA "), std::string::npos) << rl.output;
  EXPECT_NE(rl.output.find("ptx 16 texts"), std::string::npos) << rl.output;
  auto rl_json = nlohmann::json::parse(Slurp(d + "/rl.json"));
  ASSERT_EQ(rl_json["steps"].size(), 4u);
  EXPECT_EQ(rl_json["step"].get<int>(), 4);
  EXPECT_GT(rl_json["steps"][3]["ptx_loss"].get<double>(), 0.0);
  const std::string policy = rl_json["checkpoint"].get<std::string>();
  EXPECT_EQ(policy,
            std::filesystem::path(d + "/job/learner/step-00000004/policy").lexically_normal());
  EXPECT_FALSE(Slurp(policy + "/config.json").empty());

  RunResult again_rl = Rlhf("rl " + job + ",rl.steps=4");
  EXPECT_NE(again_rl.exit_code, 0);
  EXPECT_NE(again_rl.output.find("already holds learner checkpoints: pass --resume"),
            std::string::npos)
      << again_rl.output;
  RunResult resumed = Rlhf("rl " + job + ",rl.steps=6 --resume --json_out " + d + "/rl2.json");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  auto rl2_json = nlohmann::json::parse(Slurp(d + "/rl2.json"));
  ASSERT_EQ(rl2_json["steps"].size(), 2u);
  EXPECT_EQ(rl2_json["steps"][0]["step"].get<int>(), 5);

  // The reward model must be one: the SFT checkpoint has no scalar head.
  RunResult not_rm = Rlhf("rl --set run_dir=" + d + "/job2,model.sft_checkpoint=" + d +
                          "/sft,model.rm_checkpoint=" + d + "/sft,data.dir=" + d + "/data");
  EXPECT_NE(not_rm.exit_code, 0);
  EXPECT_NE(not_rm.output.find("/sft is not a reward model (no scalar head)"), std::string::npos)
      << not_rm.output;

  // Resuming a finished run changes nothing and succeeds.
  RunResult again = Rlhf("sft --data " + d + "/data/sft.jsonl --out " + d +
                         "/sft --steps 4 --batch_size 4 --resume");
  EXPECT_EQ(again.exit_code, 0) << again.output;
}

}  // namespace
