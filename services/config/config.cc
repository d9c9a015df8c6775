#include "services/config/config.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <set>
#include <sstream>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/data/prompt_template.h"
#include "core/status_macros.h"
#include "core/util/device_name.h"
#include "core/util/file_util.h"
#include "services/batching_defaults.h"

namespace rlhf::config {
namespace {

namespace pb = ::google::protobuf;
using Json = nlohmann::json;
using rlhf::v1::JobConfig;

// ---------------------------------------------------------------------------------
// YAML -> typed JSON, guided by the descriptor.

std::string JoinPath(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : absl::StrCat(parent, ".", key);
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The lower-case short names of an enum's values: "ALGORITHM_PPO" -> "ppo" (the common
// "<TYPE>_" prefix dropped). UNSPECIFIED values are not offered.
std::string EnumShortName(const pb::EnumValueDescriptor* value) {
  const pb::EnumDescriptor* type = value->type();
  std::string prefix = type->value(0)->name();
  for (int i = 1; i < type->value_count(); ++i) {
    const std::string& n = type->value(i)->name();
    size_t k = 0;
    while (k < prefix.size() && k < n.size() && prefix[k] == n[k]) ++k;
    prefix.resize(k);
  }
  if (auto us = prefix.rfind('_'); us != std::string::npos) {
    prefix.resize(us + 1);
  } else {
    prefix.clear();
  }
  return absl::AsciiStrToLower(value->name().substr(prefix.size()));
}

class YamlToJson {
 public:
  explicit YamlToJson(std::string source) : source_(std::move(source)) {}

  absl::StatusOr<Json> Message(const YAML::Node& node, const pb::Descriptor* desc,
                               const std::string& path) {
    Json out = Json::object();
    if (node.IsNull()) return out;
    if (!node.IsMap()) {
      return Error(node, path.empty() ? "<top level>" : path,
                   absl::StrCat("expected a mapping (key: value), got ", Describe(node)));
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar()) {
        return Error(it->first, path, "keys must be plain names");
      }
      const std::string key = it->first.Scalar();
      const std::string child_path = JoinPath(path, key);
      const pb::FieldDescriptor* field = desc->FindFieldByName(key);
      if (field == nullptr) {
        std::string hint;
        size_t best = 3;
        for (int i = 0; i < desc->field_count(); ++i) {
          size_t d = EditDistance(key, desc->field(i)->name());
          if (d < best) {
            best = d;
            hint = absl::StrCat(" (did you mean '", desc->field(i)->name(), "'?)");
          }
        }
        std::vector<std::string> names;
        for (int i = 0; i < desc->field_count(); ++i) names.push_back(desc->field(i)->name());
        if (hint.empty()) hint = absl::StrCat("; known fields: ", absl::StrJoin(names, ", "));
        return Error(it->first, child_path, absl::StrCat("unknown field", hint));
      }
      if (it->second.IsNull()) continue;  // "key:" with no value = keep the default.
      if (field->is_repeated()) {
        if (!it->second.IsSequence()) {
          return Error(it->second, child_path,
                       absl::StrCat("expected a list, got ", Describe(it->second)));
        }
        Json arr = Json::array();
        for (size_t i = 0; i < it->second.size(); ++i) {
          RLHF_ASSIGN_OR_RETURN(Json v, Value(it->second[i], field,
                                              absl::StrCat(child_path, "[", i, "]")));
          arr.push_back(std::move(v));
        }
        out[key] = std::move(arr);
      } else {
        RLHF_ASSIGN_OR_RETURN(out[key], Value(it->second, field, child_path));
      }
    }
    return out;
  }

 private:
  absl::StatusOr<Json> Value(const YAML::Node& node, const pb::FieldDescriptor* field,
                             const std::string& path) {
    using FD = pb::FieldDescriptor;
    if (field->cpp_type() == FD::CPPTYPE_MESSAGE) {
      return Message(node, field->message_type(), path);
    }
    if (!node.IsScalar()) {
      return Error(node, path,
                   absl::StrCat("expected ", Expected(field), ", got ", Describe(node)));
    }
    const std::string s = node.Scalar();
    auto bad = [&]() {
      return Error(node, path, absl::StrCat("expected ", Expected(field), ", got '", s, "'"));
    };
    switch (field->cpp_type()) {
      case FD::CPPTYPE_INT32:
      case FD::CPPTYPE_INT64: {
        int64_t v;
        if (!absl::SimpleAtoi(s, &v)) return bad();
        if (field->cpp_type() == FD::CPPTYPE_INT32 &&
            (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())) {
          return Error(node, path, absl::StrCat("value ", s, " does not fit in 32 bits"));
        }
        return Json(v);
      }
      case FD::CPPTYPE_UINT32:
      case FD::CPPTYPE_UINT64: {
        uint64_t v;
        if (absl::StartsWith(s, "-") || !absl::SimpleAtoi(s, &v)) return bad();
        if (field->cpp_type() == FD::CPPTYPE_UINT32 && v > std::numeric_limits<uint32_t>::max()) {
          return Error(node, path, absl::StrCat("value ", s, " does not fit in 32 bits"));
        }
        return Json(v);
      }
      case FD::CPPTYPE_FLOAT:
      case FD::CPPTYPE_DOUBLE: {
        double v;
        if (!absl::SimpleAtod(s, &v) || !std::isfinite(v)) return bad();
        return Json(v);
      }
      case FD::CPPTYPE_BOOL: {
        const std::string l = absl::AsciiStrToLower(s);
        if (l == "true" || l == "yes" || l == "on") return Json(true);
        if (l == "false" || l == "no" || l == "off") return Json(false);
        return bad();
      }
      case FD::CPPTYPE_STRING:
        return Json(s);
      case FD::CPPTYPE_ENUM: {
        const pb::EnumDescriptor* type = field->enum_type();
        const std::string upper = absl::AsciiStrToUpper(s);
        std::vector<std::string> choices;
        for (int i = 0; i < type->value_count(); ++i) {
          const pb::EnumValueDescriptor* v = type->value(i);
          const std::string short_name = EnumShortName(v);
          if (upper == v->name() || absl::AsciiStrToLower(s) == short_name) {
            return Json(v->name());
          }
          if (v->number() != 0) choices.push_back(short_name);
        }
        return Error(node, path,
                     absl::StrCat("unknown value '", s, "'; expected one of ",
                                  absl::StrJoin(choices, ", ")));
      }
      case FD::CPPTYPE_MESSAGE:
        break;
    }
    return bad();
  }

  static std::string Expected(const pb::FieldDescriptor* field) {
    using FD = pb::FieldDescriptor;
    switch (field->cpp_type()) {
      case FD::CPPTYPE_INT32:
      case FD::CPPTYPE_INT64:
        return "an integer";
      case FD::CPPTYPE_UINT32:
      case FD::CPPTYPE_UINT64:
        return "a non-negative integer";
      case FD::CPPTYPE_FLOAT:
      case FD::CPPTYPE_DOUBLE:
        return "a number";
      case FD::CPPTYPE_BOOL:
        return "true or false";
      case FD::CPPTYPE_STRING:
        return "a string";
      case FD::CPPTYPE_ENUM:
        return "an enum name";
      case FD::CPPTYPE_MESSAGE:
        return "a mapping";
    }
    return "a value";
  }

  static std::string Describe(const YAML::Node& node) {
    if (node.IsMap()) return "a mapping";
    if (node.IsSequence()) return "a list";
    if (node.IsScalar()) return absl::StrCat("'", node.Scalar(), "'");
    return "nothing";
  }

  absl::Status Error(const YAML::Node& node, const std::string& path,
                     absl::string_view what) const {
    std::string where = source_;
    const YAML::Mark mark = node.Mark();
    if (!mark.is_null()) absl::StrAppend(&where, ":", mark.line + 1);
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", path, ": ", what));
  }

  std::string source_;
};

// Sets `dotted.path` in the YAML tree to `value` (parsed as YAML), creating maps.
absl::Status ApplyOverride(YAML::Node& root, const std::string& spec) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("override '", spec, "': expected dotted.path=value"));
  }
  const std::string path = spec.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(spec.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("override ", path, ": cannot parse value: ", e.msg));
  }
  if (!root.IsMap()) root = YAML::Node(YAML::NodeType::Map);
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  // yaml-cpp nodes are handles: walk with fresh handles (operator= on a handle would
  // overwrite the pointee instead of rebinding).
  std::function<void(YAML::Node, size_t)> set = [&](YAML::Node node, size_t i) {
    if (i + 1 == parts.size()) {
      node[parts[i]] = value;
      return;
    }
    YAML::Node child = node[parts[i]];
    if (!child.IsMap()) node[parts[i]] = YAML::Node(YAML::NodeType::Map);
    set(node[parts[i]], i + 1);
  };
  set(root, 0);
  return absl::OkStatus();
}

// Deep merge: objects merge key by key; anything else (scalars, lists) replaces.
void MergeJson(Json& base, const Json& over) {
  if (!base.is_object() || !over.is_object()) {
    base = over;
    return;
  }
  for (auto it = over.begin(); it != over.end(); ++it) {
    if (base.contains(it.key())) {
      MergeJson(base[it.key()], it.value());
    } else {
      base[it.key()] = it.value();
    }
  }
}

bool JsonHas(const Json& j, const std::vector<std::string>& path) {
  const Json* cur = &j;
  for (const std::string& p : path) {
    if (!cur->is_object() || !cur->contains(p)) return false;
    cur = &(*cur)[p];
  }
  return true;
}

// ---------------------------------------------------------------------------------
// Placeholders and paths.

void SubstituteStrings(pb::Message* msg, const std::string& from, const std::string& to) {
  const pb::Reflection* refl = msg->GetReflection();
  const pb::Descriptor* desc = msg->GetDescriptor();
  for (int i = 0; i < desc->field_count(); ++i) {
    const pb::FieldDescriptor* f = desc->field(i);
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
      if (f->is_repeated()) {
        for (int k = 0; k < refl->FieldSize(*msg, f); ++k) {
          refl->SetRepeatedString(msg, f, k,
                                  absl::StrReplaceAll(refl->GetRepeatedString(*msg, f, k),
                                                      {{from, to}}));
        }
      } else {
        refl->SetString(msg, f, absl::StrReplaceAll(refl->GetString(*msg, f), {{from, to}}));
      }
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int k = 0; k < refl->FieldSize(*msg, f); ++k) {
          SubstituteStrings(refl->MutableRepeatedMessage(msg, f, k), from, to);
        }
      } else if (refl->HasField(*msg, f)) {
        SubstituteStrings(refl->MutableMessage(msg, f), from, to);
      }
    }
  }
}

std::string Absolute(const std::string& base, const std::string& p) {
  if (p.empty()) return p;
  std::filesystem::path path(p);
  if (path.is_relative()) path = std::filesystem::path(base) / path;
  return path.lexically_normal().string();
}

void ResolvePaths(JobConfig& c, const std::string& base) {
  c.set_run_dir(Absolute(base, c.run_dir()));
  SubstituteStrings(&c, "<run_dir>", c.run_dir());
  c.mutable_data()->set_dir(Absolute(base, c.data().dir()));
  for (auto* files : {c.mutable_data()->mutable_sft(), c.mutable_data()->mutable_preferences(),
                      c.mutable_data()->mutable_prompts(), c.mutable_data()->mutable_pretrain()}) {
    for (auto& f : *files->mutable_files()) f = Absolute(base, f);
    for (auto& f : *files->mutable_heldout()) f = Absolute(base, f);
  }
  c.mutable_eval()->set_heldout_rm_checkpoint(Absolute(base, c.eval().heldout_rm_checkpoint()));
  c.mutable_model()->set_sft_checkpoint(Absolute(base, c.model().sft_checkpoint()));
  c.mutable_model()->set_rm_checkpoint(Absolute(base, c.model().rm_checkpoint()));
  c.mutable_model()->set_init_checkpoint(Absolute(base, c.model().init_checkpoint()));
  c.mutable_launcher()->set_export_dir(Absolute(base, c.launcher().export_dir()));
  for (auto& s : *c.mutable_reward_server()->mutable_scorers()) {
    if (s.type() == "rm" && s.checkpoint().empty()) s.set_checkpoint(c.model().rm_checkpoint());
    s.set_checkpoint(Absolute(base, s.checkpoint()));
    if (s.type() == "exact_match" && s.references().empty()) {
      s.add_references(c.data().dir() + "/rl_train.jsonl");
      s.add_references(c.data().dir() + "/rl_heldout.jsonl");
    }
    for (auto& f : *s.mutable_references()) f = Absolute(base, f);
  }
  auto* ref = c.mutable_reference_server();
  if (ref->checkpoint().empty()) ref->set_checkpoint(c.model().sft_checkpoint());
  ref->set_checkpoint(Absolute(base, ref->checkpoint()));
  auto* sec = c.mutable_security();
  sec->set_token_file(Absolute(base, sec->token_file()));
  sec->set_tls_cert(Absolute(base, sec->tls_cert()));
  sec->set_tls_key(Absolute(base, sec->tls_key()));
  sec->set_tls_ca(Absolute(base, sec->tls_ca()));
  sec->set_client_cert(Absolute(base, sec->client_cert()));
  sec->set_client_key(Absolute(base, sec->client_key()));
}

// Checkpoints and files the YAML named explicitly must exist.
absl::Status CheckExplicitFiles(const JobConfig& c, const Json& user) {
  std::vector<std::string> errors;
  // Paths inside the run directory are the pipeline's own outputs (`rlhf run` trains
  // missing SFT/RM checkpoints there); only paths pointing elsewhere must exist now.
  const std::string run_prefix = c.run_dir() + "/";
  auto check = [&](const std::vector<std::string>& key, const std::string& value,
                   const char* what) {
    if (value.empty() || !JsonHas(user, key) || absl::StartsWith(value, run_prefix)) return;
    std::error_code ec;
    if (!std::filesystem::exists(value, ec)) {
      errors.push_back(absl::StrCat(absl::StrJoin(key, "."), ": ", what, " '", value,
                                    "' does not exist"));
    }
  };
  check({"model", "sft_checkpoint"}, c.model().sft_checkpoint(), "SFT checkpoint");
  check({"model", "rm_checkpoint"}, c.model().rm_checkpoint(), "reward-model checkpoint");
  check({"model", "init_checkpoint"}, c.model().init_checkpoint(), "initial checkpoint");
  check({"reference_server", "checkpoint"}, c.reference_server().checkpoint(),
        "reference checkpoint");
  for (int i = 0; i < c.reward_server().scorers_size(); ++i) {
    const auto& s = c.reward_server().scorers(i);
    const Json* scorers = nullptr;
    if (JsonHas(user, {"reward_server", "scorers"})) scorers = &user["reward_server"]["scorers"];
    if (scorers != nullptr && scorers->is_array() && i < static_cast<int>(scorers->size()) &&
        (*scorers)[i].contains("checkpoint") && !s.checkpoint().empty() &&
        !absl::StartsWith(s.checkpoint(), run_prefix)) {
      std::error_code ec;
      if (!std::filesystem::exists(s.checkpoint(), ec)) {
        errors.push_back(absl::StrCat("reward_server.scorers[", i,
                                      "].checkpoint: reward-model checkpoint '",
                                      s.checkpoint(), "' does not exist"));
      }
    }
  }
  check({"security", "token_file"}, c.security().token_file(), "token file");
  check({"security", "tls_cert"}, c.security().tls_cert(), "TLS certificate");
  check({"security", "tls_key"}, c.security().tls_key(), "TLS key");
  check({"security", "tls_ca"}, c.security().tls_ca(), "TLS CA");
  check({"security", "client_cert"}, c.security().client_cert(), "TLS client certificate");
  check({"security", "client_key"}, c.security().client_key(), "TLS client key");
  if (errors.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
}

// ---------------------------------------------------------------------------------
// Validation.

class Checker {
 public:
  template <typename T>
  void AtLeast(const char* path, T v, T lo) {
    if (!(v >= lo)) errors_.push_back(absl::StrCat(path, ": must be >= ", lo, ", got ", v));
  }
  template <typename T>
  void Positive(const char* path, T v) {
    if (!(v > 0)) errors_.push_back(absl::StrCat(path, ": must be > 0, got ", v));
  }
  template <typename T>
  void Range(const char* path, T v, T lo, T hi) {
    if (!(v >= lo && v <= hi)) {
      errors_.push_back(absl::StrCat(path, ": must be in [", lo, ", ", hi, "], got ", v));
    }
  }
  void Port(const std::string& path, int v, bool allow_minus_one) {
    if (v < (allow_minus_one ? -1 : 0) || v > 65535) {
      errors_.push_back(absl::StrCat(path, ": must be a port in [", allow_minus_one ? "-1" : "0",
                                     ", 65535], got ", v));
    }
  }
  void Require(bool ok, const std::string& msg) {
    if (!ok) errors_.push_back(msg);
  }
  absl::Status status() const {
    if (errors_.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrJoin(errors_, "\n"));
  }

 private:
  std::vector<std::string> errors_;
};

void CheckEndpoint(Checker& ch, const std::string& p, const rlhf::v1::ServerEndpoint& e) {
  ch.Require(!e.host().empty(), absl::StrCat(p, ".host: must not be empty"));
  ch.Port(absl::StrCat(p, ".port"), e.port(), false);
  ch.Port(absl::StrCat(p, ".metrics_port"), e.metrics_port(), true);
  ch.Require(e.threads() >= 1, absl::StrCat(p, ".threads: must be >= 1, got ", e.threads()));
}

void CheckBatching(Checker& ch, const std::string& p, const rlhf::v1::BatchingConfig& b) {
  ch.Require(b.max_batch_tokens() >= 1,
             absl::StrCat(p, ".max_batch_tokens: must be >= 1, got ", b.max_batch_tokens()));
  ch.Require(b.max_wait_ms() >= 0,
             absl::StrCat(p, ".max_wait_ms: must be >= 0, got ", b.max_wait_ms()));
  ch.Require(b.max_queue() >= 1, absl::StrCat(p, ".max_queue: must be >= 1, got ", b.max_queue()));
  ch.Require(b.max_sequences_per_request() >= 1,
             absl::StrCat(p, ".max_sequences_per_request: must be >= 1, got ",
                          b.max_sequences_per_request()));
}

void CollectNonFinite(const pb::Message& msg, const std::string& path,
                      std::vector<std::string>* errors) {
  const pb::Reflection* refl = msg.GetReflection();
  const pb::Descriptor* desc = msg.GetDescriptor();
  for (int i = 0; i < desc->field_count(); ++i) {
    const pb::FieldDescriptor* f = desc->field(i);
    const std::string p = JoinPath(path, f->name());
    if (f->is_repeated()) {
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        for (int k = 0; k < refl->FieldSize(msg, f); ++k) {
          CollectNonFinite(refl->GetRepeatedMessage(msg, f, k), absl::StrCat(p, "[", k, "]"),
                           errors);
        }
      }
      continue;
    }
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT &&
        !std::isfinite(refl->GetFloat(msg, f))) {
      errors->push_back(absl::StrCat(p, ": must be finite"));
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE && refl->HasField(msg, f)) {
      CollectNonFinite(refl->GetMessage(msg, f), p, errors);
    }
  }
}

}  // namespace

JobConfig DefaultJobConfig() {
  JobConfig c;
  c.set_name("rlhf");
  c.set_run_dir("runs/<name>");
  c.set_seed(1);

  auto* data = c.mutable_data();
  data->set_task("builtin");
  data->set_dir("<run_dir>/data");
  data->set_seed(1);
  data->set_num_sft(2000);
  data->set_num_rank(1000);
  data->set_num_rl_train(512);
  data->set_num_rl_heldout(128);
  data->set_num_pretrain(1000);
  data->set_heldout_fraction(0.1f);

  auto* model = c.mutable_model();
  model->set_preset("tiny");
  model->set_sft_checkpoint("<run_dir>/sft");
  model->set_rm_checkpoint("<run_dir>/rm");
  model->set_max_seq_len(128);
  model->set_compute_dtype("fp32");  // = kDefaultComputeDtype (core/model/compute_dtype.h)
  model->set_device("cpu");          // = kDefaultDevice (core/model/device.h)

  auto* sft = c.mutable_sft();
  sft->set_steps(600);
  sft->set_batch_size(32);
  sft->set_lr(1e-3f);
  sft->set_warmup_steps(30);
  sft->set_weight_decay(0.01f);
  sft->set_grad_clip(1.0f);
  sft->set_train_on_prompt(false);
  sft->set_eval_every(100);
  sft->set_checkpoint_every(200);

  auto* rm = c.mutable_rm();
  rm->set_steps(300);
  rm->set_prompts_per_batch(8);
  rm->set_lr(3e-4f);
  rm->set_warmup_steps(20);
  rm->set_weight_decay(0.01f);
  rm->set_grad_clip(1.0f);
  rm->set_eval_every(100);
  rm->set_heldout_fraction(0.1f);
  rm->set_label_samples_per_prompt(8);
  rm->set_label_prompts(3000);
  rm->set_label_min_gold_gap(0.02f);

  auto* sampling = c.mutable_sampling();
  sampling->set_temperature(1.0f);
  sampling->set_top_k(0);
  sampling->set_top_p(1.0f);
  sampling->set_max_new_tokens(48);
  // stop_tokens: none by default. The model's EOS always stops (each sampling process
  // adds its tokenizer's, services/config/sampling_config.h: WithModelEos).

  auto* rl = c.mutable_rl();
  rl->set_algorithm(rlhf::v1::ALGORITHM_REINFORCE);
  rl->set_steps(60);
  rl->set_prompts_per_step(32);
  rl->set_samples_per_prompt(4);
  rl->set_epochs(1);
  rl->set_minibatch_size(32);
  rl->set_grad_accum(1);
  rl->set_lr(2e-5f);
  rl->set_weight_decay(0.0f);
  rl->set_grad_clip(1.0f);
  rl->set_warmup_steps(0);
  auto* kl = rl->mutable_kl();
  kl->set_placement(rlhf::v1::KL_PLACEMENT_IN_REWARD);
  kl->set_estimator(rlhf::v1::KL_ESTIMATOR_CHOICE_K1);
  kl->set_beta(0.05f);
  kl->set_adaptive(true);
  kl->set_target(3.0f);
  kl->set_horizon(10000);
  kl->set_top_k(32);
  rl->set_ptx_coef(0.0f);
  rl->set_ptx_batch_size(8);
  rl->set_entropy_coef(0.0f);
  rl->set_clip_eps(0.2f);
  rl->set_value_clip_eps(0.2f);
  rl->set_value_coef(0.5f);
  rl->set_gamma(1.0f);
  rl->set_lam(0.95f);
  rl->set_is_truncation(2.0f);
  rl->set_baseline_decay(0.9f);
  rl->set_loss_aggregation(rlhf::v1::LOSS_AGGREGATION_TOKEN_MEAN);
  rl->set_max_staleness(1);
  rl->set_checkpoint_every(20);
  rl->set_keep_checkpoints(3);
  rl->set_grpo_eps(1e-4f);
  rl->set_whiten_advantages(false);
  rl->set_decay_steps(0);
  rl->set_train_dtype("fp32");

  auto* actors = c.mutable_actors();
  actors->set_count(2);
  actors->set_prompts_per_lease(8);
  actors->set_max_restarts(3);
  actors->set_restart_backoff_ms(1000);
  actors->set_threads(1);
  actors->set_generation_batch(0);

  auto* weights = c.mutable_weights();
  weights->set_transport(rlhf::v1::WEIGHT_TRANSPORT_GRPC);
  weights->set_bucket_bytes(16 << 20);
  weights->set_timeout_s(60);
  weights->set_store_host("127.0.0.1");
  weights->set_store_port(0);

  auto endpoint = [](rlhf::v1::ServerEndpoint* e, int threads) {
    e->set_host("127.0.0.1");
    e->set_port(0);
    e->set_metrics_port(0);
    e->set_threads(threads);
  };
  auto batching = [](rlhf::v1::BatchingConfig* b) {
    b->set_max_batch_tokens(static_cast<int32_t>(services::kDefaultMaxBatchTokens));
    b->set_max_wait_ms(services::kDefaultMaxWaitMs);
    b->set_max_queue(static_cast<int32_t>(services::kDefaultMaxQueueSequences));
    b->set_max_sequences_per_request(services::kDefaultMaxSequencesPerRequest);
  };
  endpoint(c.mutable_reward_server()->mutable_endpoint(), 1);
  batching(c.mutable_reward_server()->mutable_batching());
  auto* scorer = c.mutable_reward_server()->add_scorers();
  scorer->set_type("rm");
  scorer->set_weight(1.0f);
  scorer->set_normalize(true);
  endpoint(c.mutable_reference_server()->mutable_endpoint(), 1);
  batching(c.mutable_reference_server()->mutable_batching());

  auto* learner = c.mutable_learner();
  endpoint(learner->mutable_endpoint(), 2);
  learner->set_lease_timeout_ms(30000);
  learner->set_heartbeat_interval_ms(2000);
  learner->set_threads(2);

  auto* mon = c.mutable_monitoring();
  mon->set_prometheus(false);
  mon->set_prometheus_port(0);
  mon->set_scrape_interval_ms(1000);

  c.mutable_security()->set_allow_insecure(false);

  auto* launcher = c.mutable_launcher();
  launcher->set_grace_period_ms(10000);
  launcher->set_health_timeout_s(120);
  launcher->set_status_interval_ms(2000);
  launcher->set_metrics_port(0);
  launcher->set_train_missing(true);
  launcher->set_eval(true);

  auto* eval = c.mutable_eval();
  eval->set_num_prompts(0);
  eval->set_samples_per_prompt(1);
  eval->set_num_examples(3);
  eval->set_gold(true);
  eval->set_step_prompts(8);

  c.mutable_slurm()->set_stop_grace_s(60);
  return c;
}

absl::StatusOr<JobConfig> ParseJobConfigYaml(absl::string_view yaml_text,
                                             absl::string_view source_name,
                                             const LoadOptions& options) {
  const std::string source(source_name.empty() ? "<config>" : source_name);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, e.mark.is_null() ? "" : absl::StrCat(":", e.mark.line + 1), ": YAML syntax: ",
        e.msg));
  }
  for (const std::string& o : options.overrides) RLHF_RETURN_IF_ERROR(ApplyOverride(root, o));

  YamlToJson walker(source);
  RLHF_ASSIGN_OR_RETURN(Json user, walker.Message(root, JobConfig::descriptor(), ""));

  // Per-element defaults of the one repeated message (a list replaces the default list
  // wholesale, so its elements need their own defaults).
  if (JsonHas(user, {"reward_server", "scorers"})) {
    Json& scorers = user["reward_server"]["scorers"];
    for (size_t i = 0; i < scorers.size(); ++i) {
      Json& s = scorers[i];
      if (!s.contains("type")) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": reward_server.scorers[", i, "].type: required ('rm' or 'gold')"));
      }
      if (!s.contains("weight")) s["weight"] = 1.0;
      if (!s.contains("normalize")) s["normalize"] = s["type"] == "rm";
      if (!s.contains("timeout_ms")) s["timeout_ms"] = 10000;
    }
  }

  std::string defaults_json;
  pb::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  print.always_print_primitive_fields = true;
  if (auto st = pb::util::MessageToJsonString(DefaultJobConfig(), &defaults_json, print);
      !st.ok()) {
    return absl::InternalError(absl::StrCat("defaults to JSON: ", st.ToString()));
  }
  Json merged = Json::parse(defaults_json);
  MergeJson(merged, user);

  JobConfig config;
  pb::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = false;
  if (auto st = pb::util::JsonStringToMessage(merged.dump(), &config, parse); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.ToString()));
  }

  // eval.gold defaults to whether the task has a gold labeler.
  if (!JsonHas(user, {"eval", "gold"})) config.mutable_eval()->set_gold(config.data().task() == "builtin");
  config.set_run_dir(absl::StrReplaceAll(config.run_dir(), {{"<name>", config.name()}}));
  std::string base = options.base_dir;
  if (base.empty()) {
    std::error_code ec;
    base = std::filesystem::current_path(ec).string();
  }
  ResolvePaths(config, base);
  {
    absl::Status st = ValidateJobConfig(config);
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.message()));
  }
  if (options.check_files) {
    absl::Status st = CheckExplicitFiles(config, user);
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.message()));
  }
  return config;
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path, const LoadOptions& options) {
  if (path.empty()) return ParseJobConfigYaml("", "<defaults>", options);
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("config file '", path, "': cannot open: ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseJobConfigYaml(ss.str(), path, options);
}

absl::Status ValidateJobConfig(const JobConfig& c) {
  Checker ch;
  ch.Require(!c.name().empty() &&
                 c.name().find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789_.-") == std::string::npos,
             absl::StrCat("name: must be non-empty letters, digits, '_', '.', '-'; got '",
                          c.name(), "'"));
  ch.Require(!c.run_dir().empty(), "run_dir: must not be empty");

  const auto& d = c.data();
  ch.Require(!d.task().empty(), "data.task: must not be empty");
  if (d.task() == "builtin") {
    ch.AtLeast("data.num_sft", d.num_sft(), 1);
    ch.AtLeast("data.num_rank", d.num_rank(), 1);
    ch.AtLeast("data.num_rl_train", d.num_rl_train(), 1);
    ch.AtLeast("data.num_rl_heldout", d.num_rl_heldout(), 1);
    ch.AtLeast("data.num_pretrain", d.num_pretrain(), 0);
    ch.Require(c.prompt_template().empty(),
               "prompt_template: the built-in task's gold labeler reads plain prompts; "
               "export it (`rlhf data`) and run it as data.task 'files' to use a template");
  } else if (d.task() == "files") {
    ch.Require(d.prompts().files_size() > 0,
               "data.prompts.files: required for data.task 'files' (RL and eval prompts)");
    ch.Require(d.heldout_fraction() > 0 && d.heldout_fraction() < 1,
               absl::StrCat("data.heldout_fraction: must be in (0, 1), got ",
                            d.heldout_fraction()));
  } else {
    ch.Require(false, absl::StrCat("data.task: must be 'builtin' or 'files', got '", d.task(), "'"));
  }
  {
    auto t = PromptTemplate::Parse(c.prompt_template());
    ch.Require(t.ok(), std::string(t.status().message()));
  }

  ch.Require(!c.model().preset().empty(), "model.preset: must not be empty");
  ch.AtLeast("model.max_seq_len", c.model().max_seq_len(), 8);
  ch.Require(c.model().compute_dtype() == "fp32" || c.model().compute_dtype() == "bf16" ||
                 c.model().compute_dtype() == "fp16",
             absl::StrCat("model.compute_dtype: must be fp32, bf16 or fp16, got '",
                          c.model().compute_dtype(), "'"));
  ch.Require(
      rlhf::IsDeviceName(c.model().device()),
      absl::StrCat("model.device: must be cpu, cuda or cuda:N, got '", c.model().device(), "'"));

  const auto& s = c.sft();
  ch.AtLeast("sft.steps", s.steps(), 0);
  ch.AtLeast("sft.batch_size", s.batch_size(), 1);
  ch.Positive("sft.lr", s.lr());
  ch.AtLeast("sft.warmup_steps", s.warmup_steps(), 0);
  ch.AtLeast("sft.weight_decay", s.weight_decay(), 0.0f);
  ch.AtLeast("sft.grad_clip", s.grad_clip(), 0.0f);
  ch.AtLeast("sft.eval_every", s.eval_every(), 1);
  ch.AtLeast("sft.checkpoint_every", s.checkpoint_every(), 1);

  const auto& r = c.rm();
  ch.AtLeast("rm.steps", r.steps(), 0);
  ch.AtLeast("rm.prompts_per_batch", r.prompts_per_batch(), 1);
  ch.Positive("rm.lr", r.lr());
  ch.AtLeast("rm.warmup_steps", r.warmup_steps(), 0);
  ch.AtLeast("rm.weight_decay", r.weight_decay(), 0.0f);
  ch.AtLeast("rm.grad_clip", r.grad_clip(), 0.0f);
  ch.AtLeast("rm.eval_every", r.eval_every(), 1);
  ch.Range("rm.heldout_fraction", r.heldout_fraction(), 0.0f, 0.9f);
  if (r.label_samples_per_prompt() != 0) {
    ch.Range("rm.label_samples_per_prompt", r.label_samples_per_prompt(), 2, 16);
  }
  ch.AtLeast("rm.label_prompts", r.label_prompts(), 1);
  ch.Range("rm.label_min_gold_gap", r.label_min_gold_gap(), 0.0f, 0.1f);

  const auto& sp = c.sampling();
  ch.AtLeast("sampling.temperature", sp.temperature(), 0.0f);
  ch.AtLeast("sampling.top_k", sp.top_k(), 0);
  ch.Range("sampling.top_p", sp.top_p(), 1e-6f, 1.0f);
  ch.AtLeast("sampling.max_new_tokens", sp.max_new_tokens(), 1);
  ch.Require(sp.max_new_tokens() < c.model().max_seq_len(),
             absl::StrCat("sampling.max_new_tokens: must be < model.max_seq_len (",
                          c.model().max_seq_len(), "), got ", sp.max_new_tokens()));
  for (int i = 0; i < sp.stop_tokens_size(); ++i) {
    ch.Require(sp.stop_tokens(i) >= 0, absl::StrCat("sampling.stop_tokens[", i,
                                                    "]: must be >= 0, got ", sp.stop_tokens(i)));
  }

  const auto& rl = c.rl();
  ch.AtLeast("rl.steps", rl.steps(), 1);
  ch.AtLeast("rl.prompts_per_step", rl.prompts_per_step(), 1);
  ch.AtLeast("rl.samples_per_prompt", rl.samples_per_prompt(), 1);
  if (rl.algorithm() == rlhf::v1::ALGORITHM_RLOO || rl.algorithm() == rlhf::v1::ALGORITHM_GRPO) {
    ch.Require(rl.samples_per_prompt() >= 2,
               absl::StrCat("rl.samples_per_prompt: RLOO and GRPO need >= 2 samples per "
                            "prompt, got ",
                            rl.samples_per_prompt()));
  }
  ch.AtLeast("rl.epochs", rl.epochs(), 1);
  ch.AtLeast("rl.minibatch_size", rl.minibatch_size(), 1);
  ch.AtLeast("rl.grad_accum", rl.grad_accum(), 1);
  ch.Positive("rl.lr", rl.lr());
  ch.AtLeast("rl.weight_decay", rl.weight_decay(), 0.0f);
  ch.AtLeast("rl.grad_clip", rl.grad_clip(), 0.0f);
  ch.AtLeast("rl.warmup_steps", rl.warmup_steps(), 0);
  ch.AtLeast("rl.kl.beta", rl.kl().beta(), 0.0f);
  if (rl.kl().adaptive()) ch.Positive("rl.kl.target", rl.kl().target());
  ch.AtLeast("rl.kl.horizon", rl.kl().horizon(), 1);
  ch.AtLeast("rl.kl.top_k", rl.kl().top_k(), 0);
  ch.Require(rl.kl().estimator() != rlhf::v1::KL_ESTIMATOR_CHOICE_EXACT ||
                 rl.kl().placement() != rlhf::v1::KL_PLACEMENT_IN_LOSS,
             "rl.kl.estimator: exact is computed by the reference server from the actors' "
             "distributions and works with kl.placement in_reward only");
  ch.AtLeast("rl.decay_steps", rl.decay_steps(), 0);
  ch.Require(rl.train_dtype() == "fp32" || rl.train_dtype() == "bf16",
             absl::StrCat("rl.train_dtype: must be fp32 or bf16, got '", rl.train_dtype(), "'"));
  ch.AtLeast("rl.ptx_coef", rl.ptx_coef(), 0.0f);
  ch.AtLeast("rl.ptx_batch_size", rl.ptx_batch_size(), 1);
  ch.AtLeast("rl.entropy_coef", rl.entropy_coef(), 0.0f);
  ch.Range("rl.clip_eps", rl.clip_eps(), 0.0f, 1.0f);
  ch.AtLeast("rl.value_clip_eps", rl.value_clip_eps(), 0.0f);
  ch.AtLeast("rl.value_coef", rl.value_coef(), 0.0f);
  ch.Range("rl.gamma", rl.gamma(), 0.0f, 1.0f);
  ch.Range("rl.lam", rl.lam(), 0.0f, 1.0f);
  ch.Positive("rl.is_truncation", rl.is_truncation());
  ch.Range("rl.baseline_decay", rl.baseline_decay(), 0.0f, 1.0f);
  ch.AtLeast("rl.max_staleness", rl.max_staleness(), 0);
  ch.AtLeast("rl.checkpoint_every", rl.checkpoint_every(), 0);
  ch.AtLeast("rl.keep_checkpoints", rl.keep_checkpoints(), 1);
  ch.Positive("rl.grpo_eps", rl.grpo_eps());

  const auto& a = c.actors();
  ch.AtLeast("actors.count", a.count(), 1);
  ch.AtLeast("actors.prompts_per_lease", a.prompts_per_lease(), 1);
  ch.AtLeast("actors.max_restarts", a.max_restarts(), 0);
  ch.AtLeast("actors.restart_backoff_ms", a.restart_backoff_ms(), 0);
  ch.AtLeast("actors.threads", a.threads(), 1);
  ch.AtLeast("actors.generation_batch", a.generation_batch(), 0);

  const auto& w = c.weights();
  ch.AtLeast("weights.bucket_bytes", w.bucket_bytes(), int64_t{1024});
  ch.AtLeast("weights.timeout_s", w.timeout_s(), 1);
  ch.Require(!w.store_host().empty(), "weights.store_host: must not be empty");
  ch.Port("weights.store_port", w.store_port(), false);

  CheckEndpoint(ch, "reward_server.endpoint", c.reward_server().endpoint());
  CheckBatching(ch, "reward_server.batching", c.reward_server().batching());
  ch.Require(c.reward_server().scorers_size() >= 1,
             "reward_server.scorers: needs at least one scorer");
  for (int i = 0; i < c.reward_server().scorers_size(); ++i) {
    const auto& sc = c.reward_server().scorers(i);
    const std::string p = absl::StrCat("reward_server.scorers[", i, "]");
    static const char* const kTypes[] = {"rm", "gold", "length", "regex", "exact_match", "remote"};
    ch.Require(std::find(std::begin(kTypes), std::end(kTypes), sc.type()) != std::end(kTypes),
               absl::StrCat(p, ".type: must be one of rm, gold, length, regex, exact_match, "
                               "remote; got '", sc.type(), "'"));
    if (sc.type() == "rm") {
      ch.Require(!sc.checkpoint().empty(),
                 absl::StrCat(p, ".checkpoint: required for type 'rm'"));
    }
    if (sc.type() == "gold") {
      ch.Require(c.data().task() == "builtin",
                 absl::StrCat(p, ".type: 'gold' needs data.task 'builtin' (its labeler)"));
    }
    if (sc.type() == "length") ch.AtLeast((p + ".target_length").c_str(), sc.target_length(), 1);
    ch.AtLeast((p + ".length_tolerance").c_str(), sc.length_tolerance(), 0);
    if (sc.type() == "regex") {
      ch.Require(!sc.pattern().empty(), absl::StrCat(p, ".pattern: required for type 'regex'"));
    }
    if (sc.type() == "remote") {
      ch.Require(!sc.address().empty(),
                 absl::StrCat(p, ".address: required for type 'remote' (host:port)"));
      ch.AtLeast((p + ".timeout_ms").c_str(), sc.timeout_ms(), 1);
    }
  }
  CheckEndpoint(ch, "reference_server.endpoint", c.reference_server().endpoint());
  CheckBatching(ch, "reference_server.batching", c.reference_server().batching());
  ch.Require(!c.reference_server().checkpoint().empty(),
             "reference_server.checkpoint: must not be empty");

  CheckEndpoint(ch, "learner.endpoint", c.learner().endpoint());
  ch.AtLeast("learner.lease_timeout_ms", c.learner().lease_timeout_ms(), 100);
  ch.AtLeast("learner.heartbeat_interval_ms", c.learner().heartbeat_interval_ms(), 10);
  ch.Require(c.learner().heartbeat_interval_ms() < c.learner().lease_timeout_ms(),
             absl::StrCat("learner.heartbeat_interval_ms: must be < learner.lease_timeout_ms (",
                          c.learner().lease_timeout_ms(), "), got ",
                          c.learner().heartbeat_interval_ms()));
  ch.AtLeast("learner.threads", c.learner().threads(), 1);

  ch.Port("monitoring.prometheus_port", c.monitoring().prometheus_port(), false);
  ch.AtLeast("monitoring.scrape_interval_ms", c.monitoring().scrape_interval_ms(), 100);

  ch.Require(c.security().tls_cert().empty() == c.security().tls_key().empty(),
             "security.tls_key: tls_cert and tls_key must be given together");
  ch.Require(!c.security().require_client_cert() || !c.security().tls_ca().empty(),
             "security.tls_ca: required when require_client_cert is true");
  ch.Require(c.security().client_cert().empty() == c.security().client_key().empty(),
             "security.client_key: client_cert and client_key must be given together");
  ch.Require(
      !(c.security().has_auto_tls() && c.security().auto_tls()) || c.security().tls_cert().empty(),
      "security.auto_tls: true makes the job's own certificates; remove tls_cert/"
      "tls_key/tls_ca to use it, or set auto_tls: false to use the given ones");

  ch.AtLeast("launcher.grace_period_ms", c.launcher().grace_period_ms(), 0);
  ch.AtLeast("launcher.health_timeout_s", c.launcher().health_timeout_s(), 1);
  ch.AtLeast("launcher.status_interval_ms", c.launcher().status_interval_ms(), 100);
  ch.Port("launcher.metrics_port", c.launcher().metrics_port(), true);

  ch.AtLeast("eval.num_prompts", c.eval().num_prompts(), 0);
  ch.AtLeast("eval.samples_per_prompt", c.eval().samples_per_prompt(), 1);
  ch.AtLeast("eval.num_examples", c.eval().num_examples(), 0);
  ch.AtLeast("eval.step_prompts", c.eval().step_prompts(), 0);
  ch.Require(!c.eval().gold() || c.data().task() == "builtin",
             "eval.gold: only the built-in task has a gold labeler");

  ch.AtLeast("slurm.nodes", c.slurm().nodes(), 0);
  ch.AtLeast("slurm.mem_per_cpu_mb", c.slurm().mem_per_cpu_mb(), 0);
  ch.AtLeast("slurm.stop_grace_s", c.slurm().stop_grace_s(), 1);

  std::vector<std::string> non_finite;
  CollectNonFinite(c, "", &non_finite);
  for (const auto& e : non_finite) ch.Require(false, e);
  return ch.status();
}

namespace {

void EmitJson(YAML::Emitter& out, const Json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      EmitJson(out, it.value());
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& e : j) EmitJson(out, e);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    out << YAML::DoubleQuoted << j.get<std::string>();
  } else if (j.is_boolean()) {
    out << (j.get<bool>() ? "true" : "false");
  } else if (j.is_null()) {
    out << YAML::Null;
  } else {
    out << j.dump();  // numbers: nlohmann's shortest round-trip form.
  }
}

}  // namespace

std::string JobConfigToYaml(const JobConfig& config) {
  std::string json;
  pb::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  print.always_print_primitive_fields = true;
  (void)pb::util::MessageToJsonString(config, &json, print);
  // int64 fields print as JSON strings; the loader accepts either.
  YAML::Emitter out;
  out << YAML::Comment("Resolved job config written by rlhf (every field explicit).");
  out << YAML::Newline;
  EmitJson(out, Json::parse(json));
  return std::string(out.c_str()) + "\n";
}

absl::Status WriteJobConfig(const JobConfig& config, const std::string& path) {
  absl::Status s = WriteFileAtomically(path, JobConfigToYaml(config));
  if (!s.ok()) return absl::InternalError(absl::StrCat("writing config: ", s.message()));
  return absl::OkStatus();
}

}  // namespace rlhf::config
