// `rlhf run --launcher slurm` without a cluster (RunOnSlurm with submit = false): the
// batch scripts it writes are valid bash, ask for the resource shape the config gives
// each process, carry the config's flags, and configs Slurm cannot run are refused
// with the field named and nothing written.
#include "tools/launcher/slurm.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace rlhf::launcher {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class SlurmScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(absl::StrCat(::testing::TempDir(), "/slurm_script_", ::getpid()))
               .lexically_normal()
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ + "/token") << "t\n";
  }
  // Writes job.yaml with `body` (+ run_dir) and runs the generator on it.
  absl::StatusOr<SlurmSubmission> Generate(const std::string& body,
                                           std::vector<std::string> overrides = {}) {
    std::ofstream(dir_ + "/job.yaml") << "name: gen\nrun_dir: " << dir_ << "/run\n" << body;
    SlurmOptions o;
    o.config_path = dir_ + "/job.yaml";
    o.overrides = std::move(overrides);
    o.bin_dir = "/opt/rlhf/bin";
    o.submit = false;
    return RunOnSlurm(o);
  }
  // `bash -n`: the script parses.
  static int BashSyntax(const std::string& path) {
    return std::system(absl::StrCat("bash -n '", path, "'").c_str());
  }
  std::string dir_;
};

TEST_F(SlurmScriptTest, ScriptsCarryTheResourceShapeAndFlags) {
  auto s = Generate(
      absl::StrCat("actors:\n  count: 3\n  threads: 2\nlearner:\n  threads: 4\n",
                   "reward_server:\n  endpoint:\n    threads: 3\n  scorers:\n    - type: gold\n",
                   "reference_server:\n  endpoint:\n    threads: 1\n",
                   "security:\n  token_file: ", dir_, "/token\n  allow_insecure: true\n",
                   "slurm:\n  partition: gpu\n  time_limit: \"2:00:00\"\n  nodes: 2\n",
                   "  mem_per_cpu_mb: 4000\n  sbatch_args: [\"--qos=high\"]\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->job_script, dir_ + "/run/slurm/job.sbatch");
  EXPECT_TRUE(s->job_id.empty());
  EXPECT_TRUE(fs::exists(dir_ + "/run/config.yaml"));
  EXPECT_EQ(BashSyntax(s->job_script), 0);
  EXPECT_EQ(BashSyntax(s->actors_script), 0);
  EXPECT_TRUE((fs::status(s->job_script).permissions() & fs::perms::owner_exec) !=
              fs::perms::none);

  const std::string job = ReadAll(s->job_script);
  // Learner + 2 servers + 3 actors, each task as wide as the widest process (4).
  EXPECT_THAT(job, HasSubstr("#SBATCH --ntasks=6\n"));
  EXPECT_THAT(job, HasSubstr("#SBATCH --cpus-per-task=4\n"));
  EXPECT_THAT(job, HasSubstr("#SBATCH --nodes=2\n"));
  EXPECT_THAT(job, HasSubstr("#SBATCH --partition=gpu\n"));
  EXPECT_THAT(job, HasSubstr("#SBATCH --time=2:00:00\n"));
  EXPECT_THAT(job, HasSubstr("#SBATCH --mem-per-cpu=4000M\n"));
  EXPECT_THAT(job, HasSubstr("#SBATCH --qos=high\n"));
  EXPECT_THAT(job, Not(HasSubstr("--overcommit\n")));
  // Each step's CPUs are its process's threads.
  EXPECT_THAT(job, HasSubstr("LEARNER_THREADS=4\n"));
  EXPECT_THAT(job, HasSubstr("REWARD_THREADS=3\n"));
  EXPECT_THAT(job, HasSubstr("REFERENCE_THREADS=1\n"));
  EXPECT_THAT(job, HasSubstr("ACTOR_THREADS=2\n"));
  EXPECT_THAT(job, HasSubstr("N_ACTORS=3\n"));
  EXPECT_THAT(job, HasSubstr("BIN='/opt/rlhf/bin'"));
  // The reward server's scorers as JSON (stage_argv.h's RewardServerArgs, shared with the
  // local launcher).
  EXPECT_THAT(job, HasSubstr(R"('--scorers_json=[{"timeout_ms":10000,"type":"gold","weight":1.0}]')"));
  EXPECT_THAT(job, HasSubstr(absl::StrCat("'--token_file=", dir_, "/token'")));
  EXPECT_THAT(job, HasSubstr("--cpus-per-task=\"$cpus\""));

  const std::string actors = ReadAll(s->actors_script);
  EXPECT_THAT(actors, HasSubstr("#SBATCH --cpus-per-task=2\n"));
  EXPECT_THAT(actors, HasSubstr("#SBATCH --partition=gpu\n"));
  EXPECT_THAT(actors, HasSubstr("addresses.env"));
  EXPECT_THAT(actors, HasSubstr(absl::StrCat("'--token_file=", dir_, "/token'")));
}

TEST_F(SlurmScriptTest, OvercommitAndQuotedValues) {
  auto s = Generate(absl::StrCat("security:\n  allow_insecure: true\n",
                                 "slurm:\n  overcommit: true\n  advertise_host: \"it's\"\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string job = ReadAll(s->job_script);
  EXPECT_THAT(job, HasSubstr("#SBATCH --overcommit\n"));
  EXPECT_THAT(job, HasSubstr("OVERCOMMIT=--overcommit\n"));
  EXPECT_THAT(job, HasSubstr("ADVERTISE='it'\\''s'\n"));  // a quote survives bash
  EXPECT_THAT(job, HasSubstr("'--allow_insecure'"));
  EXPECT_EQ(BashSyntax(s->job_script), 0);
}

TEST_F(SlurmScriptTest, RefusesWhatSlurmCannotRunAndWritesNothing) {
  // No token, no TLS, no opt-in: servers would listen unauthenticated on all interfaces.
  auto s = Generate("actors:\n  count: 1\n");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("security.token_file"));
  EXPECT_FALSE(fs::exists(dir_ + "/run/slurm/job.sbatch"));
  // A token without TLS is refused too: it would cross the network in clear text.
  s = Generate(absl::StrCat("security:\n  token_file: ", dir_, "/token\n"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("clear text"));
  EXPECT_FALSE(fs::exists(dir_ + "/run/slurm/job.sbatch"));

  s = Generate(absl::StrCat("security:\n  token_file: ", dir_, "/token\n  allow_insecure: true\n",
                            "weights:\n  transport: collective\n"));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("weights.transport"));
  EXPECT_FALSE(fs::exists(dir_ + "/run/slurm/job.sbatch"));

  // Config errors keep the loader's path-naming message.
  s = Generate("slurm:\n  nodez: 2\n");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("slurm.nodez"));
  s = Generate("security:\n  allow_insecure: true\nslurm:\n  stop_grace_s: 0\n");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("slurm.stop_grace_s"));
}

}  // namespace
}  // namespace rlhf::launcher
