#include "reward_server/scorers.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <type_traits>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>
#include <re2/re2.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/data/gold_labeler.h"
#include "core/data/jsonl.h"
#include "core/model/checkpoint.h"
#include "core/model/device.h"
#include "core/model/logprobs.h"
#include "core/status_macros.h"
#include "core/train/training_common.h"
#include "reward_server/reward_client.h"

namespace rlhf::reward {

absl::StatusOr<std::unique_ptr<ModelRewardScorer>> ModelRewardScorer::Create(
    std::string name, TransformerLM model, int32_t pad_id, Normalization normalization) {
  if (!model) return absl::InvalidArgumentError("reward model: null");
  if (!model->config().scalar_head) {
    return absl::InvalidArgumentError(
        absl::StrCat("reward model '", name, "': config.scalar_head is false"));
  }
  if (normalization.enabled && !(normalization.std > 0 && std::isfinite(normalization.std) &&
                                 std::isfinite(normalization.mean))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reward model '", name, "': reward_std must be finite and > 0, got ", normalization.std));
  }
  model->eval();
  return std::unique_ptr<ModelRewardScorer>(
      new ModelRewardScorer(std::move(name), std::move(model), pad_id, normalization));
}

absl::StatusOr<std::unique_ptr<ModelRewardScorer>> ModelRewardScorer::FromCheckpoint(
    std::string name, const std::string& dir, int32_t pad_id, bool normalize,
    const ModelLoadOptions& load) {
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint loaded, LoadModel(dir, load));
  Normalization n;
  if (normalize) {
    const nlohmann::json& md = loaded.metadata;
    if (!md.is_object() || !md.contains("reward_mean") || !md.contains("reward_std") ||
        !md["reward_mean"].is_number() || !md["reward_std"].is_number()) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, "/config.json: normalisation requested but metadata has no numeric "
               "reward_mean / reward_std"));
    }
    n.enabled = true;
    n.mean = md["reward_mean"].get<double>();
    n.std = md["reward_std"].get<double>();
  }
  return Create(std::move(name), std::move(loaded.model), pad_id, n);
}

absl::StatusOr<std::vector<float>> ModelRewardScorer::Score(
    const std::vector<const ScoringSequence*>& batch) {
  std::vector<std::vector<int32_t>> prompts, responses;
  prompts.reserve(batch.size());
  responses.reserve(batch.size());
  for (const ScoringSequence* s : batch) {
    prompts.push_back(s->prompt);
    responses.push_back(s->response);
  }
  SequenceBatchOptions options;
  options.pad_id = pad_id_;
  options.max_len = model_->config().max_seq_len;
  RLHF_ASSIGN_OR_RETURN(SequenceBatch host, MakeSequenceBatch(prompts, responses, options));
  return TorchCall(
      [&]() -> std::vector<float> {
        c10::InferenceMode guard;
        // Packed on the host, run on the model's device; only the scores come back.
        const SequenceBatch packed = SequenceBatchToDevice(host, ModelDevice(model_));
        ForwardOutput out = model_->forward(packed.ids, packed.attention_mask, packed.position_ids);
        torch::Tensor scores = ScoreAtLastToken(out.scalar, packed.attention_mask);
        if (normalization_.enabled) {
          scores = (scores - normalization_.mean) / normalization_.std;
        }
        scores = scores.to(torch::kCPU).contiguous();
        const float* p = scores.data_ptr<float>();
        return std::vector<float>(p, p + scores.numel());
      },
      "reward model forward");
}

absl::StatusOr<std::vector<float>> GoldRewardScorer::Score(
    const std::vector<const ScoringSequence*>& batch) {
  std::vector<float> out;
  out.reserve(batch.size());
  for (const ScoringSequence* s : batch) {
    out.push_back(static_cast<float>(
        GoldScore(tokenizer_->Decode(s->prompt), tokenizer_->Decode(s->response))));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LengthRewardScorer>> LengthRewardScorer::Create(
    std::shared_ptr<const Tokenizer> tokenizer, int64_t target, int64_t tolerance,
    std::string name) {
  if (target < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": target_length must be >= 1 byte, got ", target));
  }
  if (tolerance < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": length_tolerance must be >= 0, got ", tolerance));
  }
  return std::unique_ptr<LengthRewardScorer>(
      new LengthRewardScorer(std::move(tokenizer), target, tolerance, std::move(name)));
}

absl::StatusOr<std::vector<float>> LengthRewardScorer::Score(
    const std::vector<const ScoringSequence*>& batch) {
  std::vector<float> out;
  out.reserve(batch.size());
  for (const ScoringSequence* s : batch) {
    const int64_t bytes = static_cast<int64_t>(tokenizer_->Decode(s->response).size());
    const int64_t excess = std::max<int64_t>(0, std::llabs(bytes - target_) - tolerance_);
    out.push_back(-static_cast<float>(static_cast<double>(excess) / target_));
  }
  return out;
}

struct RegexRewardScorer::Impl {
  explicit Impl(const std::string& pattern) : re(pattern, RE2::Quiet) {}
  RE2 re;
};

RegexRewardScorer::RegexRewardScorer(std::shared_ptr<const Tokenizer> t,
                                     std::unique_ptr<Impl> impl, bool forbidden,
                                     std::string name)
    : name_(std::move(name)), tokenizer_(std::move(t)), impl_(std::move(impl)),
      forbidden_(forbidden) {}
RegexRewardScorer::~RegexRewardScorer() = default;

absl::StatusOr<std::unique_ptr<RegexRewardScorer>> RegexRewardScorer::Create(
    std::shared_ptr<const Tokenizer> tokenizer, const std::string& pattern, bool forbidden,
    std::string name) {
  auto impl = std::make_unique<Impl>(pattern);
  if (!impl->re.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": pattern '", pattern, "': ", impl->re.error()));
  }
  return std::unique_ptr<RegexRewardScorer>(
      new RegexRewardScorer(std::move(tokenizer), std::move(impl), forbidden, std::move(name)));
}

absl::StatusOr<std::vector<float>> RegexRewardScorer::Score(
    const std::vector<const ScoringSequence*>& batch) {
  std::vector<float> out;
  out.reserve(batch.size());
  for (const ScoringSequence* s : batch) {
    const bool found = RE2::PartialMatch(tokenizer_->Decode(s->response), impl_->re);
    out.push_back(forbidden_ ? (found ? -1.0f : 0.0f) : (found ? 1.0f : 0.0f));
  }
  return out;
}

namespace {
std::string NormaliseAnswer(absl::string_view text, bool ignore_case) {
  std::string out(absl::StripAsciiWhitespace(text));
  if (ignore_case) absl::AsciiStrToLower(&out);
  return out;
}
}  // namespace

absl::StatusOr<std::unique_ptr<ExactMatchRewardScorer>> ExactMatchRewardScorer::FromPromptFiles(
    std::shared_ptr<const Tokenizer> tokenizer, const std::vector<std::string>& prompt_files,
    bool ignore_case, std::string name) {
  std::unique_ptr<ExactMatchRewardScorer> scorer(
      new ExactMatchRewardScorer(tokenizer, ignore_case, name));
  for (const std::string& file : prompt_files) {
    RLHF_RETURN_IF_ERROR(ForEachPromptRecord(file, {}, [&](PromptRecord r) -> absl::Status {
      if (r.reference.empty()) return absl::OkStatus();
      std::string ref = NormaliseAnswer(r.reference, ignore_case);
      auto [it, inserted] =
          scorer->references_.emplace(EncodePrompt(*tokenizer, r.prompt), ref);
      if (!inserted && it->second != ref) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": prompt '", r.prompt, "' has two different references ('", it->second,
            "' and '", ref, "')"));
      }
      return absl::OkStatus();
    }));
  }
  if (scorer->references_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": no prompt record with a \"reference\" in ", prompt_files.size(), " file(s)"));
  }
  return scorer;
}

absl::StatusOr<std::vector<float>> ExactMatchRewardScorer::Score(
    const std::vector<const ScoringSequence*>& batch) {
  std::vector<float> out;
  out.reserve(batch.size());
  for (const ScoringSequence* s : batch) {
    auto it = references_.find(s->prompt);
    if (it == references_.end()) {
      ++missing_;
      out.push_back(0.0f);
      continue;
    }
    out.push_back(NormaliseAnswer(tokenizer_->Decode(s->response), ignore_case_) == it->second
                      ? 1.0f
                      : 0.0f);
  }
  return out;
}

RemoteRewardScorer::RemoteRewardScorer(std::unique_ptr<RewardClient> client,
                                       absl::Duration timeout, std::string name)
    : name_(std::move(name)), client_(std::move(client)), timeout_(timeout) {}
RemoteRewardScorer::~RemoteRewardScorer() = default;

absl::StatusOr<std::unique_ptr<RemoteRewardScorer>> RemoteRewardScorer::Connect(
    const std::string& address, absl::Duration timeout, std::string name) {
  services::ChannelOptions channel;
  channel.target = address;
  RLHF_ASSIGN_OR_RETURN(std::unique_ptr<GrpcRewardClient> client,
                        GrpcRewardClient::Create(channel));
  return std::make_unique<RemoteRewardScorer>(std::move(client), timeout, std::move(name));
}

absl::StatusOr<std::vector<float>> RemoteRewardScorer::Score(
    const std::vector<const ScoringSequence*>& batch) {
  rlhf::v1::RewardScoreRequest request;
  for (const ScoringSequence* s : batch) {
    auto* seq = request.add_sequences();
    seq->mutable_prompt()->Add(s->prompt.begin(), s->prompt.end());
    seq->mutable_response()->Add(s->response.begin(), s->response.end());
  }
  absl::StatusOr<rlhf::v1::RewardScoreResponse> response =
      client_->Score(request, absl::Now() + timeout_);
  if (!response.ok()) {
    return absl::Status(response.status().code(),
                        absl::StrCat(name_, ": ", response.status().message()));
  }
  if (response->rewards_size() != static_cast<int>(batch.size())) {
    return absl::InternalError(absl::StrCat(name_, ": remote server returned ",
                                            response->rewards_size(), " rewards for ",
                                            batch.size(), " sequences"));
  }
  std::vector<float> out(response->rewards().begin(), response->rewards().end());
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) {
      return absl::InternalError(
          absl::StrCat(name_, ": remote server returned a non-finite reward at ", i));
    }
  }
  return out;
}

absl::StatusOr<std::vector<ScorerSpec>> ParseScorerSpecsJson(const std::string& text) {
  using Json = nlohmann::json;
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array()) {
    return absl::InvalidArgumentError("scorers_json: expected a JSON array of scorer objects");
  }
  std::vector<ScorerSpec> specs;
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& o = j[i];
    const std::string at = absl::StrCat("scorers[", i, "]");
    if (!o.is_object()) return absl::InvalidArgumentError(at + ": expected an object");
    ScorerSpec spec;
    auto str = [&](const char* key, std::string* out) -> absl::Status {
      if (!o.contains(key)) return absl::OkStatus();
      if (!o[key].is_string()) return absl::InvalidArgumentError(absl::StrCat(at, ".", key, ": expected string"));
      *out = o[key].get<std::string>();
      return absl::OkStatus();
    };
    auto num = [&](const char* key, auto* out) -> absl::Status {
      if (!o.contains(key)) return absl::OkStatus();
      if (!o[key].is_number()) return absl::InvalidArgumentError(absl::StrCat(at, ".", key, ": expected number"));
      *out = o[key].get<std::remove_pointer_t<decltype(out)>>();
      return absl::OkStatus();
    };
    auto boolean = [&](const char* key, bool* out) -> absl::Status {
      if (!o.contains(key)) return absl::OkStatus();
      if (!o[key].is_boolean()) return absl::InvalidArgumentError(absl::StrCat(at, ".", key, ": expected boolean"));
      *out = o[key].get<bool>();
      return absl::OkStatus();
    };
    static const char* const kKnown[] = {"type", "checkpoint", "weight", "normalize", "name",
                                         "target_length", "length_tolerance", "pattern",
                                         "forbidden", "references", "ignore_case", "address",
                                         "timeout_ms"};
    for (auto it = o.begin(); it != o.end(); ++it) {
      if (std::find(std::begin(kKnown), std::end(kKnown), it.key()) == std::end(kKnown)) {
        return absl::InvalidArgumentError(absl::StrCat(at, ".", it.key(), ": unknown field"));
      }
    }
    std::string type;
    bool normalize = false;
    RLHF_RETURN_IF_ERROR(str("type", &type));
    RLHF_RETURN_IF_ERROR(str("name", &spec.name));
    RLHF_RETURN_IF_ERROR(str("checkpoint", &spec.checkpoint));
    RLHF_RETURN_IF_ERROR(num("weight", &spec.weight));
    RLHF_RETURN_IF_ERROR(boolean("normalize", &normalize));
    RLHF_RETURN_IF_ERROR(num("target_length", &spec.target_length));
    RLHF_RETURN_IF_ERROR(num("length_tolerance", &spec.length_tolerance));
    RLHF_RETURN_IF_ERROR(str("pattern", &spec.pattern));
    RLHF_RETURN_IF_ERROR(boolean("forbidden", &spec.forbidden));
    RLHF_RETURN_IF_ERROR(boolean("ignore_case", &spec.ignore_case));
    RLHF_RETURN_IF_ERROR(str("address", &spec.address));
    RLHF_RETURN_IF_ERROR(num("timeout_ms", &spec.timeout_ms));
    if (o.contains("references")) {
      if (!o["references"].is_array()) {
        return absl::InvalidArgumentError(at + ".references: expected array of strings");
      }
      for (const Json& r : o["references"]) {
        if (!r.is_string()) return absl::InvalidArgumentError(at + ".references: expected array of strings");
        spec.references.push_back(r.get<std::string>());
      }
    }
    if (!std::isfinite(spec.weight)) return absl::InvalidArgumentError(at + ".weight: not finite");
    if (type == "rm") {
      spec.kind = ScorerSpec::Kind::kModel;
      if (spec.checkpoint.empty()) return absl::InvalidArgumentError(at + ".checkpoint: required for type 'rm'");
    } else if (type == "gold") {
      spec.kind = ScorerSpec::Kind::kGold;
    } else if (type == "length") {
      spec.kind = ScorerSpec::Kind::kLength;
    } else if (type == "regex") {
      spec.kind = ScorerSpec::Kind::kRegex;
      if (spec.pattern.empty()) return absl::InvalidArgumentError(at + ".pattern: required for type 'regex'");
    } else if (type == "exact_match") {
      spec.kind = ScorerSpec::Kind::kExactMatch;
      if (spec.references.empty()) {
        return absl::InvalidArgumentError(at + ".references: required for type 'exact_match'");
      }
    } else if (type == "remote") {
      spec.kind = ScorerSpec::Kind::kRemote;
      if (spec.address.empty()) return absl::InvalidArgumentError(at + ".address: required for type 'remote'");
      if (spec.timeout_ms < 1) return absl::InvalidArgumentError(at + ".timeout_ms: must be >= 1");
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          at, ".type: '", type, "' is not one of rm, gold, length, regex, exact_match, remote"));
    }
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) return absl::InvalidArgumentError("scorers_json: empty");
  return specs;
}

absl::StatusOr<std::unique_ptr<RewardScorer>> MakeRuleScorer(
    const ScorerSpec& spec, std::shared_ptr<const Tokenizer> tokenizer) {
  auto named = [&](const char* type) { return spec.name.empty() ? std::string(type) : spec.name; };
  switch (spec.kind) {
    case ScorerSpec::Kind::kGold:
      return std::make_unique<GoldRewardScorer>(tokenizer, named("gold"));
    case ScorerSpec::Kind::kLength: {
      RLHF_ASSIGN_OR_RETURN(auto s, LengthRewardScorer::Create(tokenizer, spec.target_length,
                                                               spec.length_tolerance,
                                                               named("length")));
      return std::unique_ptr<RewardScorer>(std::move(s));
    }
    case ScorerSpec::Kind::kRegex: {
      RLHF_ASSIGN_OR_RETURN(auto s, RegexRewardScorer::Create(tokenizer, spec.pattern,
                                                              spec.forbidden, named("regex")));
      return std::unique_ptr<RewardScorer>(std::move(s));
    }
    case ScorerSpec::Kind::kExactMatch: {
      RLHF_ASSIGN_OR_RETURN(auto s, ExactMatchRewardScorer::FromPromptFiles(
                                        tokenizer, spec.references, spec.ignore_case,
                                        named("exact_match")));
      return std::unique_ptr<RewardScorer>(std::move(s));
    }
    case ScorerSpec::Kind::kRemote: {
      RLHF_ASSIGN_OR_RETURN(auto s, RemoteRewardScorer::Connect(
                                        spec.address, absl::Milliseconds(spec.timeout_ms),
                                        named("remote")));
      return std::unique_ptr<RewardScorer>(std::move(s));
    }
    case ScorerSpec::Kind::kModel:
      break;
  }
  return absl::InvalidArgumentError("MakeRuleScorer: model scorers load a checkpoint");
}

absl::StatusOr<std::vector<ScorerSpec>> ParseScorerSpecs(const std::string& text) {
  std::vector<ScorerSpec> specs;
  int index = 0;
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    const std::string field = absl::StrCat("scorers[", index++, "] '", entry, "'");
    std::vector<std::string> parts = absl::StrSplit(entry, ':');
    ScorerSpec spec;
    std::string weight_text;
    if (parts[0] == "gold") {
      spec.kind = ScorerSpec::Kind::kGold;
      if (parts.size() > 2) return absl::InvalidArgumentError(field + ": expected gold[:weight]");
      if (parts.size() == 2) weight_text = parts[1];
    } else if (parts[0] == "rm") {
      spec.kind = ScorerSpec::Kind::kModel;
      if (parts.size() < 2 || parts.size() > 3 || parts[1].empty()) {
        return absl::InvalidArgumentError(field + ": expected rm:<checkpoint dir>[:weight]");
      }
      spec.checkpoint = parts[1];
      if (parts.size() == 3) weight_text = parts[2];
    } else {
      return absl::InvalidArgumentError(field + ": unknown scorer kind (expected rm or gold)");
    }
    if (!weight_text.empty() &&
        (!absl::SimpleAtod(weight_text, &spec.weight) || !std::isfinite(spec.weight))) {
      return absl::InvalidArgumentError(field + ": weight is not a finite number");
    }
    specs.push_back(spec);
  }
  if (specs.empty()) return absl::InvalidArgumentError("scorers: empty");
  return specs;
}

}  // namespace rlhf::reward
