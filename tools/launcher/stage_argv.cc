#include "tools/launcher/stage_argv.h"

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rlhf::launcher {

namespace {

// model.compute_dtype for the processes that only run frozen models forward (unset in a
// bare JobConfig: the binaries' own default, fp32).
void AppendComputeDtype(const rlhf::v1::JobConfig& c, Argv* argv) {
  if (!c.model().compute_dtype().empty()) argv->push_back("--compute_dtype=" + c.model().compute_dtype());
}

}  // namespace

Argv DeviceArgs(const rlhf::v1::JobConfig& c) {
  if (c.model().device().empty()) return {};
  return {"--device=" + c.model().device()};
}

Argv UserDataArgv(const rlhf::v1::JobConfig& c, const JobPaths& p) {
  const auto& d = c.data();
  Argv argv = {p.Bin("rlhf"),
               "data",
               "--task=files",
               "--out=" + d.dir(),
               absl::StrCat("--seed=", d.seed()),
               absl::StrCat("--heldout_fraction=", d.heldout_fraction()),
               "--prompt_template=" + c.prompt_template()};
  auto add = [&](const char* flag, const google::protobuf::RepeatedPtrField<std::string>& f) {
    if (!f.empty()) argv.push_back(absl::StrCat("--", flag, "=", absl::StrJoin(f, ",")));
  };
  add("sft_files", d.sft().files());
  add("sft_heldout_files", d.sft().heldout());
  add("preference_files", d.preferences().files());
  add("preference_heldout_files", d.preferences().heldout());
  add("prompt_files", d.prompts().files());
  add("prompt_heldout_files", d.prompts().heldout());
  add("pretrain_files", d.pretrain().files());
  if (d.skip_malformed()) argv.push_back("--skip_malformed");
  return argv;
}

Argv DataArgv(const rlhf::v1::JobConfig& c, const JobPaths& p) {
  const auto& d = c.data();
  return {p.Bin("rlhf"),
          "data",
          "--task=builtin",
          "--out=" + d.dir(),
          absl::StrCat("--seed=", d.seed()),
          absl::StrCat("--num_sft=", d.num_sft()),
          absl::StrCat("--num_rank=", d.num_rank()),
          absl::StrCat("--num_rl_train=", d.num_rl_train()),
          absl::StrCat("--num_rl_heldout=", d.num_rl_heldout()),
          absl::StrCat("--num_pretrain=", d.num_pretrain())};
}

Argv SftArgv(const rlhf::v1::JobConfig& c, const JobPaths& p) {
  const auto& s = c.sft();
  const std::string data = c.data().dir();
  Argv argv = {p.Bin("rlhf"),
               "sft",
               "--data=" + data + "/sft.jsonl",
               "--heldout=" + data + "/sft_heldout.jsonl",
               "--out=" + c.model().sft_checkpoint(),
               "--preset=" + c.model().preset(),
               absl::StrCat("--max_seq_len=", c.model().max_seq_len()),
               absl::StrCat("--steps=", s.steps()),
               absl::StrCat("--batch_size=", s.batch_size()),
               absl::StrCat("--lr=", s.lr()),
               absl::StrCat("--warmup_steps=", s.warmup_steps()),
               absl::StrCat("--eval_every=", s.eval_every()),
               absl::StrCat("--checkpoint_every=", s.checkpoint_every()),
               absl::StrCat("--seed=", c.seed()),
               "--threads=2",
               "--resume",
               "--json_out=" + p.run_dir + "/sft.json"};
  if (s.train_on_prompt()) argv.push_back("--train_on_prompt");
  if (!c.model().init_checkpoint().empty()) {
    argv.push_back("--init=" + c.model().init_checkpoint());  // ours or HF
  }
  return argv;
}

Argv LabelArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, const std::string& out) {
  const auto& r = c.rm();
  const std::string data = c.data().dir();
  Argv argv = {p.Bin("rlhf"),
          "label",
          "--policy=" + c.model().sft_checkpoint(),
          "--prompts=" + data + "/rank.jsonl," + data + "/sft.jsonl",
          "--out=" + out,
          absl::StrCat("--max_prompts=", r.label_prompts()),
          absl::StrCat("--label_samples=", r.label_samples_per_prompt()),
          absl::StrCat("--min_gold_gap=", r.label_min_gold_gap()),
          absl::StrCat("--temperature=",
                       c.sampling().temperature() > 0 ? c.sampling().temperature() : 1.0f),
          absl::StrCat("--max_new_tokens=", c.sampling().max_new_tokens()),
          absl::StrCat("--seed=", c.seed()),
          "--threads=2",
          "--json_out=" + p.run_dir + "/label.json"};
  AppendComputeDtype(c, &argv);
  return argv;
}

Argv RmArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, const std::string& rank_files) {
  const auto& r = c.rm();
  return {p.Bin("rlhf"),
          "rm",
          "--data=" + rank_files,
          "--heldout=" + c.data().dir() + "/rank_heldout.jsonl",
          "--init=" + c.model().sft_checkpoint(),
          "--out=" + c.model().rm_checkpoint(),
          absl::StrCat("--steps=", r.steps()),
          absl::StrCat("--batch_size=", r.prompts_per_batch()),
          absl::StrCat("--lr=", r.lr()),
          absl::StrCat("--warmup_steps=", r.warmup_steps()),
          absl::StrCat("--eval_every=", r.eval_every()),
          absl::StrCat("--seed=", c.seed()),
          "--threads=2",
          "--resume",
          "--json_out=" + p.run_dir + "/rm.json"};
}

Argv EvalArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, const std::string& name,
              const std::string& policy, const std::string& rm_checkpoint) {
  Argv argv = {p.Bin("rlhf"),
               "eval",
               "--policy=" + policy,
               "--reference=" + c.model().sft_checkpoint(),
               "--prompts=" + c.data().dir() + "/rl_heldout.jsonl",
               "--json_out=" + p.run_dir + "/eval_" + name + ".json",
               absl::StrCat("--temperature=", c.sampling().temperature()),
               absl::StrCat("--max_new_tokens=", c.sampling().max_new_tokens()),
               absl::StrCat("--samples_per_prompt=", c.eval().samples_per_prompt()),
               absl::StrCat("--show=", c.eval().num_examples()),
               absl::StrCat("--seed=", c.seed()),
               "--threads=2"};
  AppendComputeDtype(c, &argv);
  if (!rm_checkpoint.empty()) argv.push_back("--rm=" + rm_checkpoint);
  if (c.eval().num_prompts() > 0) {
    argv.push_back(absl::StrCat("--max_prompts=", c.eval().num_prompts()));
  }
  argv.push_back(absl::StrCat("--gold=", c.eval().gold() ? "true" : "false"));
  if (!c.eval().heldout_rm_checkpoint().empty()) {
    argv.push_back("--heldout_rm=" + c.eval().heldout_rm_checkpoint());
  }
  return argv;
}

Argv StepEvalArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, const std::string& policy,
                  const std::string& rm_checkpoint, const std::string& json_out) {
  return {p.Bin("rlhf"),
          "eval",
          "--policy=" + policy,
          "--prompts=" + c.data().dir() + "/rl_heldout.jsonl",
          "--rm=" + rm_checkpoint,
          "--json_out=" + json_out,
          absl::StrCat("--temperature=", c.sampling().temperature()),
          absl::StrCat("--max_new_tokens=", c.sampling().max_new_tokens()),
          "--samples_per_prompt=1",
          "--show=0",
          absl::StrCat("--max_prompts=", c.eval().step_prompts()),
          absl::StrCat("--seed=", c.seed()),
          "--threads=1",
          "--gold=false"};
}

namespace {

// reward_server.scorers as rlhf-reward-server's --scorers_json (proto field names).
std::string ScorersJson(const rlhf::v1::RewardServerConfig& rs) {
  nlohmann::json list = nlohmann::json::array();
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  for (const auto& sc : rs.scorers()) {
    std::string text;
    (void)google::protobuf::util::MessageToJsonString(sc, &text, print);
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object()) j = nlohmann::json::object();
    j.erase("normalize");       // the server takes --normalize for all RMs
    j["weight"] = sc.weight();  // proto3 JSON drops an explicit 0
    list.push_back(j);
  }
  return list.dump();
}

void AppendBatching(const rlhf::v1::BatchingConfig& b, Argv* argv) {
  argv->push_back(absl::StrCat("--max_batch_tokens=", b.max_batch_tokens()));
  argv->push_back(absl::StrCat("--max_wait_ms=", b.max_wait_ms()));
  argv->push_back(absl::StrCat("--max_queue_sequences=", b.max_queue()));
  argv->push_back(absl::StrCat("--max_sequences_per_request=", b.max_sequences_per_request()));
}

}  // namespace

Argv RewardServerArgs(const rlhf::v1::JobConfig& c) {
  const auto& rs = c.reward_server();
  bool normalize = false;
  for (const auto& sc : rs.scorers()) normalize |= sc.type() == "rm" && sc.normalize();
  Argv argv = {"--scorers_json=" + ScorersJson(rs),
               absl::StrCat("--threads=", rs.endpoint().threads())};
  AppendBatching(rs.batching(), &argv);
  argv.push_back(absl::StrCat("--max_seq_len=", c.model().max_seq_len()));
  AppendComputeDtype(c, &argv);
  for (auto& flag : DeviceArgs(c)) argv.push_back(std::move(flag));
  if (normalize) argv.push_back("--normalize");
  return argv;
}

Argv ReferenceServerArgs(const rlhf::v1::JobConfig& c) {
  const auto& ref = c.reference_server();
  Argv argv = {"--checkpoint=" + ref.checkpoint(),
               absl::StrCat("--threads=", ref.endpoint().threads())};
  AppendBatching(ref.batching(), &argv);
  argv.push_back(absl::StrCat("--max_seq_len=", c.model().max_seq_len()));
  AppendComputeDtype(c, &argv);
  for (auto& flag : DeviceArgs(c)) argv.push_back(std::move(flag));
  return argv;
}

Argv LearnerArgs(const rlhf::v1::JobConfig& c, const JobPaths& p) {
  Argv argv = {"--config=" + p.run_dir + "/config.yaml",
               "--checkpoint_dir=" + p.run_dir + "/learner"};
  // config.yaml carries model.device too; the flag makes the learner's device visible in
  // its command line like every other process's.
  for (auto& flag : DeviceArgs(c)) argv.push_back(std::move(flag));
  return argv;
}

Argv ServerSecurityArgs(const rlhf::v1::SecurityConfig& s) {
  Argv a;
  if (!s.token_file().empty()) a.push_back("--token_file=" + s.token_file());
  if (!s.tls_cert().empty()) a.push_back("--tls_cert=" + s.tls_cert());
  if (!s.tls_key().empty()) a.push_back("--tls_key=" + s.tls_key());
  if (!s.tls_ca().empty()) a.push_back("--tls_ca=" + s.tls_ca());
  if (s.require_client_cert()) a.push_back("--require_client_cert");
  if (s.allow_insecure()) a.push_back("--allow_insecure");
  return a;
}

Argv ActorArgv(const rlhf::v1::JobConfig& c, const JobPaths& p, int index,
               const ActorAddresses& addresses) {
  const std::string name = absl::StrCat("actor-", index);
  Argv argv = {p.Bin("rlhf-actor"),
               "--actor_name=" + name,
               "--learner_address=" + addresses.learner,
               "--reward_address=" + addresses.reward,
               "--reference_address=" + addresses.reference,
               absl::StrCat("--seed=", c.seed() * 1000 + index),
               absl::StrCat("--threads=", c.actors().threads())};
  if (c.actors().generation_batch() > 0) {
    argv.push_back(absl::StrCat("--generation_batch=", c.actors().generation_batch()));
  }
  for (auto& flag : DeviceArgs(c)) argv.push_back(std::move(flag));
  argv.push_back("--metrics_port=0");
  argv.push_back("--metrics_port_file=" + p.MetricsPortFile(name));
  argv.push_back("--metrics_file=" + p.MetricsSnapshot(name));
  if (!c.weights().gloo_interface().empty()) {
    argv.push_back("--gloo_interface=" + c.weights().gloo_interface());
  }
  for (auto& flag : ActorSecurityArgs(c.security())) argv.push_back(std::move(flag));
  return argv;
}

Argv ActorSecurityArgs(const rlhf::v1::SecurityConfig& s) {
  Argv a;
  if (!s.token_file().empty()) a.push_back("--token_file=" + s.token_file());
  if (!s.tls_ca().empty()) a.push_back("--tls_ca=" + s.tls_ca());
  if (!s.client_cert().empty()) {
    a.push_back("--tls_cert=" + s.client_cert());
    a.push_back("--tls_key=" + s.client_key());
  } else if (s.require_client_cert()) {
    // Mutual TLS: the servers ask every client for a certificate signed by tls_ca.
    a.push_back("--tls_cert=" + s.tls_cert());
    a.push_back("--tls_key=" + s.tls_key());
  }
  return a;
}

std::string AdvertisedHost(const rlhf::v1::ServerEndpoint& e) {
  if (!e.advertise().empty()) return e.advertise();
  if (e.host().empty() || e.host() == "0.0.0.0" || e.host() == "::" || e.host() == "[::]") {
    return "127.0.0.1";
  }
  return e.host();
}

}  // namespace rlhf::launcher
