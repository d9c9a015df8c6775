// Many hosts on one machine (issue 18): Linux network namespaces joined by veth pairs to a
// bridge stand in for three hosts on a private range. Host A runs the real rlhf-learner,
// rlhf-reward-server and rlhf-reference-server, bound to A's address; hosts B and C run an
// rlhf-actor each, in its own working directory holding nothing but its credentials
// (copied, as to another machine). Mutual TLS + token everywhere, from the per-job CA of
// security.auto_tls (tools/launcher/job_tls.h); grpc weights.
//
// Checked: training proceeds with bitwise-identical weights on both actors per version;
// C's link goes down mid-run: its leases expire and are re-issued, training continues;
// the link comes back: C rejoins and receives new versions again; one of the two reward
// replicas (actors have both as a list) is killed with SIGKILL: nothing is refused and
// training goes on; at the end
// prompts_leased == trained + reissued + outstanding + buffered (GetStats). The learner
// has a huge step budget and is stopped with SIGTERM once the conditions hold (no race
// with a process that exits on its own). Also prints trajectories/s of the same job
// across namespaces and on loopback (no timed assertion; docs/benchmarks.md).
//
// Needs root and `ip netns` (iproute2): skipped otherwise, with the reason. Every
// namespace, veth and bridge is named after this process's pid and removed in TearDown,
// on success and on failure.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "learner/learner_client.h"
#include "services/channel.h"
#include "tests/testing/child_process.h"
#include "tools/launcher/job_tls.h"


namespace {

namespace fs = std::filesystem;
using rlhf::learner::GrpcLearnerClient;

std::string BinDir() {
  const char* d = std::getenv("RLHF_BIN_DIR");
  return d ? d : "build/bin";
}

using rlhf::testing::ReadFileOrEmpty;

// Runs a command line through sh; returns its exit code (output into `out` if given).
int Sh(const std::string& command, std::string* out = nullptr) {
  std::string text;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) text.append(buf, n);
  const int st = ::pclose(p);
  if (out != nullptr) *out = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Children run in a working directory of their own, optionally inside network namespace
// `ns` via `ip netns exec`, which execs the binary (the pid is the binary's).
using Proc = rlhf::testing::ChildProcess;

// Where the three "hosts" are. Loopback mode: everything on 127.0.0.1, no namespaces.
struct Hosts {
  std::string ns_a, ns_b, ns_c;  // "" = the test's own namespace
  std::string ip_a = "127.0.0.1";
};

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0)
      GTEST_SKIP() << "needs root to create network namespaces (uid " << ::geteuid() << ")";
    std::string out;
    if (Sh("ip netns list", &out) != 0) {
      GTEST_SKIP() << "`ip netns` unavailable (iproute2): " << out;
    }
    const int pid = static_cast<int>(::getpid());
    // Root in a container may still lack CAP_SYS_ADMIN / CAP_NET_ADMIN: try once.
    const std::string probe = absl::StrCat("rlhfprobe", pid);
    if (Sh("ip netns add " + probe, &out) != 0) {
      GTEST_SKIP() << "cannot create a network namespace here: " << out;
    }
    Sh("ip netns del " + probe);
    if (Sh("ip link add " + probe + " type bridge", &out) != 0) {
      GTEST_SKIP() << "cannot create a bridge here: " << out;
    }
    Sh("ip link del " + probe);
    tag_ = std::to_string(pid);
    // 10.213.<k>.0/24: a private test range, a /24 per test process.
    net_ = absl::StrCat("10.213.", pid % 250, ".");
    char tmpl[] = "/tmp/rlhf-netns-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    created_ = true;
  }

  void TearDown() override {
    procs_.clear();  // SIGKILL whatever still runs, before its namespace goes
    if (!created_) return;
    for (const std::string& ns : namespaces_) Sh("ip netns del " + ns);
    for (const std::string& link : links_) Sh("ip link del " + link);
    if (!HasFailure() && std::getenv("RLHF_KEEP_TEST_DIR") == nullptr) {
      fs::remove_all(dir_);
    } else {
      std::fprintf(stderr, "logs kept in %s\n", dir_.c_str());
    }
  }

  // `ip` commands, each checked; namespaces and links are recorded for TearDown before
  // they are created, so a half-built topology is removed too.
  void Ip(const std::string& args) {
    std::string out;
    ASSERT_EQ(Sh("ip " + args, &out), 0) << "ip " << args << ": " << out;
  }

  // Bridge rb<pid> (with .254, so that this test process can reach every host) and
  // three namespaces ra/rb/rc<pid> at .1/.2/.3 over veth pairs.
  Hosts BuildTopology() {
    Hosts h;
    const std::string bridge = "rbr" + tag_;
    links_.push_back(bridge);
    Ip("link add " + bridge + " type bridge");
    Ip(absl::StrCat("addr add ", net_, "254/24 dev ", bridge));
    Ip("link set " + bridge + " up");
    const char* names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; ++i) {
      const std::string ns = absl::StrCat("rlhf", names[i], tag_);
      const std::string host_end = absl::StrCat("rv", names[i], tag_);
      const std::string ns_end = absl::StrCat("rp", names[i], tag_);
      namespaces_.push_back(ns);
      Ip("netns add " + ns);
      links_.push_back(host_end);
      Ip(absl::StrCat("link add ", host_end, " type veth peer name ", ns_end));
      Ip(absl::StrCat("link set ", host_end, " master ", bridge));
      Ip(absl::StrCat("link set ", host_end, " up"));
      Ip(absl::StrCat("link set ", ns_end, " netns ", ns));
      Ip(absl::StrCat("-n ", ns, " addr add ", net_, i + 1, "/24 dev ", ns_end));
      Ip(absl::StrCat("-n ", ns, " link set ", ns_end, " up"));
      Ip(absl::StrCat("-n ", ns, " link set lo up"));
    }
    h.ns_a = namespaces_[0];
    h.ns_b = namespaces_[1];
    h.ns_c = namespaces_[2];
    h.ip_a = net_ + "1";
    return h;
  }

  // A working directory per process and run ("another machine's disk").
  std::string WorkDir(const std::string& name) {
    const std::string d = dir_ + "/" + run_ + name;
    fs::create_directories(d);
    return d;
  }

  Proc* Start(const std::string& ns, const std::string& name, const std::string& binary,
              std::vector<std::string> args) {
    std::vector<std::string> argv;
    if (!ns.empty()) argv = {"/usr/sbin/ip", "netns", "exec", ns};
    if (!ns.empty() && !fs::exists(argv[0])) argv[0] = "/sbin/ip";
    argv.push_back(BinDir() + "/" + binary);
    for (auto& a : args) argv.push_back(std::move(a));
    const std::string cwd = WorkDir(name);
    procs_.push_back(std::make_unique<Proc>(argv, cwd + "/" + name + ".log", cwd));
    EXPECT_GT(procs_.back()->pid(), 0) << name;
    return procs_.back().get();
  }

  int WaitPort(const std::string& file, Proc* proc) {
    return proc->WaitForPortFile(file, absl::Seconds(90));
  }

  // Copies `files` of the job's TLS directory into `dir` (what an operator would copy
  // to another machine).
  void CopyCredentials(const std::string& dir, const std::vector<std::string>& files) {
    for (const std::string& f : files) {
      fs::copy_file(tls_.dir + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
    }
  }

  // Starts learner + servers on host A and two actors on B and C. Every process runs in
  // its own directory with relative credential paths.
  void StartJob(const Hosts& h, const std::string& transport = "grpc") {
    auto tls = rlhf::launcher::EnsureJobTls(dir_ + "/tls", {h.ip_a, "localhost", "127.0.0.1"});
    ASSERT_TRUE(tls.ok()) << tls.status();
    tls_ = *tls;
    const std::vector<std::string> server_files = {"server.pem", "server.key", "ca.pem", "token"};
    const std::vector<std::string> client_files = {"client.pem", "client.key", "ca.pem", "token"};
    const std::vector<std::string> server_security = {
        "--tls_cert=server.pem", "--tls_key=server.key", "--tls_ca=ca.pem", "--require_client_cert",
        "--token_file=token"};
    for (const char* name : {"reward", "reward2", "reference", "learner"}) {
      CopyCredentials(WorkDir(name), server_files);
    }
    std::vector<std::string> reward_args = {"--host=" + h.ip_a, "--scorers=gold",
                                            "--port_file=port"};
    std::vector<std::string> reference_args = {"--host=" + h.ip_a, "--preset=tiny", "--seed=3",
                                               "--port_file=port"};
    std::vector<std::string> learner_args = {
        "--host=" + h.ip_a, "--port=0", "--port_file=port", "--metrics_port=-1",
        "--checkpoint_dir=ckpt", "--drain_grace_s=20", "--checkpoint_every=1000",
        // A huge step budget: the test stops the learner (SIGTERM) itself.
        "--set=rl.steps=100000,rl.prompts_per_step=4,rl.samples_per_prompt=2,"
        "rl.minibatch_size=8,rl.max_staleness=1,actors.prompts_per_lease=2,"
        "sampling.max_new_tokens=6,data.num_rl_train=24,learner.lease_timeout_ms=3000,"
        "learner.heartbeat_interval_ms=300,weights.timeout_s=20,weights.bucket_bytes=65536,"
        "weights.transport=" +
            transport + ",weights.store_host=" + h.ip_a};
    for (const auto& s : server_security) {
      reward_args.push_back(s);
      reference_args.push_back(s);
      learner_args.push_back(s);
    }
    Proc* reward = Start(h.ns_a, "reward", "rlhf-reward-server", reward_args);
    // A second replica of the reward server: actors get both as a list.
    reward2_ = Start(h.ns_a, "reward2", "rlhf-reward-server", reward_args);
    Proc* reference = Start(h.ns_a, "reference", "rlhf-reference-server", reference_args);
    learner_ = Start(h.ns_a, "learner", "rlhf-learner", learner_args);
    const int reward_port = WaitPort(WorkDir("reward") + "/port", reward);
    const int reward2_port = WaitPort(WorkDir("reward2") + "/port", reward2_);
    ASSERT_GT(reward2_port, 0);
    const int reference_port = WaitPort(WorkDir("reference") + "/port", reference);
    learner_port_ = WaitPort(WorkDir("learner") + "/port", learner_);
    ASSERT_GT(reward_port, 0);
    ASSERT_GT(reference_port, 0);
    ASSERT_GT(learner_port_, 0);
    learner_target_ = absl::StrCat(h.ip_a, ":", learner_port_);
    for (const auto& [ns, name] : {std::pair{h.ns_b, "b"}, std::pair{h.ns_c, "c"}}) {
      CopyCredentials(WorkDir(name), client_files);
      actors_[name] = Start(ns, name, "rlhf-actor",
                            {"--learner_address=" + learner_target_,
                             absl::StrCat("--reward_address=", h.ip_a, ":", reward_port, ",",
                                          h.ip_a, ":", reward2_port),
                             absl::StrCat("--reference_address=", h.ip_a, ":", reference_port),
                             std::string("--actor_name=") + name, "--log_weight_hashes",
                             "--call_timeout_s=5", "--tls_ca=ca.pem", "--tls_cert=client.pem",
                             "--tls_key=client.key", "--token_file=token"});
    }
  }

  // The test's own client: mutual TLS + token like an actor.
  std::unique_ptr<GrpcLearnerClient> Client() {
    rlhf::services::ChannelOptions c;
    c.target = learner_target_;
    c.tls.enabled = true;
    c.tls.ca_file = tls_.ca_cert;
    c.tls.cert_file = tls_.client_cert;
    c.tls.key_file = tls_.client_key;
    c.auth_token = ReadFileOrEmpty(tls_.token_file);
    while (!c.auth_token.empty() && c.auth_token.back() == '\n') c.auth_token.pop_back();
    auto client = GrpcLearnerClient::Create(c);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  rlhf::v1::LearnerStats WaitStats(const std::function<bool(const rlhf::v1::LearnerStats&)>& pred,
                                   const std::string& what,
                                   absl::Duration timeout = absl::Seconds(240)) {
    auto client = Client();
    const absl::Time until = absl::Now() + timeout;
    rlhf::v1::LearnerStats last;
    while (client != nullptr && absl::Now() < until && learner_->alive()) {
      auto s = client->GetStats({}, absl::Now() + absl::Seconds(2));
      if (s.ok()) {
        last = *s;
        if (pred(last)) return last;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << "not reached: " << what << "; last stats: " << last.ShortDebugString()
                  << "\nlearner log tail:\n"
                  << Tail(learner_->log());
    return last;
  }

  static std::string Tail(const std::string& log) {
    return log.size() > 4000 ? log.substr(log.size() - 4000) : log;
  }

  // version -> actor -> hash, from the actors' "weights: actor=N version=V hash=H" lines.
  std::map<int64_t, std::map<std::string, std::string>> Hashes() {
    std::map<int64_t, std::map<std::string, std::string>> out;
    std::regex re("weights: actor=(\\S+) version=(\\d+) hash=(\\d+)");
    for (const auto& [name, p] : actors_) {
      std::string log = p->log();
      for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it) {
        auto& slot = out[std::stoll((*it)[2])][(*it)[1]];
        slot = (!slot.empty() && slot != (*it)[3]) ? "MISMATCH" : std::string((*it)[3]);
      }
    }
    return out;
  }
  int64_t NewestVersionOf(const std::string& actor) {
    int64_t newest = -1;
    for (const auto& [version, by_actor] : Hashes()) {
      if (by_actor.count(actor)) newest = std::max(newest, version);
    }
    return newest;
  }

  // trajectories/s over `steps` learner steps after the first two (warm-up).
  double MeasureThroughput(int steps) {
    auto s0 = WaitStats([](const auto& s) { return s.step() >= 2; }, "warm-up (2 steps)");
    const absl::Time t0 = absl::Now();
    const int64_t start_step = s0.step();
    auto s1 = WaitStats([&](const auto& s) { return s.step() >= start_step + steps; },
                        "throughput window");
    const double secs = absl::ToDoubleSeconds(absl::Now() - t0);
    return static_cast<double>(s1.trajectories_trained() - s0.trajectories_trained()) / secs;
  }

  // Every version both actors applied: the same hash; at least two such versions.
  void ExpectIdenticalWeights() {
    int shared = 0;
    for (const auto& [version, by_actor] : Hashes()) {
      std::set<std::string> distinct;
      for (const auto& [actor, h] : by_actor) distinct.insert(h);
      EXPECT_EQ(distinct.size(), 1u)
          << "version " << version << ": " << absl::StrJoin(distinct, ",");
      EXPECT_EQ(distinct.count("MISMATCH"), 0u) << "version " << version;
      shared += by_actor.size() == 2;
    }
    EXPECT_GE(shared, 2);
  }

  void StopAll() {
    for (auto& [name, p] : actors_) p->Kill(SIGTERM);
    for (auto& [name, p] : actors_) EXPECT_EQ(p->Wait(absl::Seconds(90)), 0) << Tail(p->log());
    auto s =
        WaitStats([](const auto& s) { return s.actors_connected() == 0; }, "actors deregistered");
    EXPECT_EQ(s.prompts_leased(), s.prompts_trained() + s.prompts_reissued() +
                                      s.prompts_outstanding() + s.prompts_buffered())
        << s.ShortDebugString();
    learner_->Kill(SIGTERM);
    EXPECT_EQ(learner_->Wait(absl::Seconds(60)), 0) << Tail(learner_->log());
  }

  bool created_ = false;
  std::string tag_, net_, dir_;
  std::string run_ = "ns-";  // working directory prefix of the current job
  std::vector<std::string> namespaces_, links_;
  rlhf::launcher::JobTlsFiles tls_;
  std::vector<std::unique_ptr<Proc>> procs_;
  std::map<std::string, Proc*> actors_;
  Proc* learner_ = nullptr;
  Proc* reward2_ = nullptr;
  int learner_port_ = 0;
  std::string learner_target_;
};

TEST_F(NetnsTest, ActorsOnTwoHostsTrainThroughALinkFailure) {
  const Hosts hosts = BuildTopology();
  ASSERT_FALSE(HasFailure());
  StartJob(hosts);
  ASSERT_FALSE(HasFailure());
  const double netns_rate = MeasureThroughput(6);

  // Both actors work and hold identical weights per version.
  auto s = WaitStats(
      [&](const auto& s) {
        return s.actors_connected() == 2 && NewestVersionOf("b") >= 2 && NewestVersionOf("c") >= 2;
      },
      "both actors registered and updated");

  // One of the two reward replicas dies: the actors' calls go to the other; nothing
  // is refused and no lease is given up over it, and training goes on. This comes before
  // the link failure: after it, C may still submit a batch of a lease that expired while
  // it was cut off, which the learner rightly rejects at any later moment.
  const int64_t rejected_before = s.trajectories_rejected();
  reward2_->Kill(SIGKILL);
  const int64_t step_at_kill = s.step();
  s = WaitStats([&](const auto& s) { return s.step() >= step_at_kill + 3; },
                "training after a reward replica died");
  EXPECT_EQ(s.trajectories_rejected(), rejected_before) << s.ShortDebugString();

  // C's host loses its link: its leases expire and go back; B alone keeps training.
  const std::string c_link = "rvc" + tag_;
  Ip("link set " + c_link + " down");
  const int64_t reissued_before = s.prompts_reissued(), step_at_cut = s.step();
  const int64_t expired_before = s.leases_expired();
  // C is dropped after lease_timeout of silence (re-issues alone can also come from stale
  // groups, so they do not show that C is gone); every lease it held is re-issued.
  s = WaitStats(
      [&](const auto& s) { return s.actors_connected() == 1 && s.step() >= step_at_cut + 3; },
      "C dropped and training continuing without C");
  EXPECT_GE(s.prompts_reissued() - reissued_before, s.leases_expired() - expired_before)
      << s.ShortDebugString();

  // The link comes back: C rejoins and receives newer versions than before.
  const int64_t c_version_at_cut = NewestVersionOf("c");
  Ip("link set " + c_link + " up");
  const int64_t step_at_up = s.step();
  s = WaitStats(
      [&](const auto& s) {
        return s.step() >= step_at_up + 3 && NewestVersionOf("c") > c_version_at_cut &&
               s.actors_connected() == 2;
      },
      "C rejoined", absl::Seconds(300));

  StopAll();
  // Identical weights on every actor for every version both applied.
  ExpectIdenticalWeights();

  // The same job on loopback (one namespace), for the throughput ratio.
  procs_.clear();
  actors_.clear();
  run_ = "lo-";
  Hosts loopback;
  StartJob(loopback);
  ASSERT_FALSE(HasFailure());
  const double loopback_rate = MeasureThroughput(6);
  StopAll();
  std::printf("trajectories/s: across namespaces %.2f, loopback %.2f (ratio %.2f)\n", netns_rate,
              loopback_rate, loopback_rate > 0 ? netns_rate / loopback_rate : 0.0);
}

}  // namespace

// The collective transport across hosts: the learner's TCPStore on A's address, Gloo
// bound per host (the learner on store_host's address, each actor on the local address
// of its route to it; no interface configured). The gRPC control plane stays mutual TLS.
namespace {

TEST_F(NetnsTest, CollectiveWeightsAcrossHostsAreIdentical) {
  const Hosts hosts = BuildTopology();
  ASSERT_FALSE(HasFailure());
  StartJob(hosts, "collective");
  ASSERT_FALSE(HasFailure());
  WaitStats(
      [&](const auto& s) {
        return s.step() >= 4 && NewestVersionOf("b") >= 3 && NewestVersionOf("c") >= 3;
      },
      "both actors receiving broadcast versions");
  StopAll();
  ExpectIdenticalWeights();
}

}  // namespace
