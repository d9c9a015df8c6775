#include "core/rl_training/learner_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/model/checkpoint.h"
#include "core/status_macros.h"
#include "core/tokenizer/model_dir.h"

namespace rlhf {
namespace {

namespace fs = std::filesystem;

constexpr char kFormat[] = "rlhf-learner-state-v1";
constexpr char kStateFile[] = "learner_state.json";
constexpr char kOptimizerFile[] = "optimizer.safetensors";

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(err)));
  return absl::OkStatus();
}

// fsyncs every file and directory under `dir`, deepest first, then `dir`.
absl::Status FsyncTree(const std::string& dir) {
  std::error_code ec;
  std::vector<std::pair<std::string, bool>> entries;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    entries.emplace_back(it->path().string(), it->is_directory());
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", dir, ": ", ec.message()));
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    RLHF_RETURN_IF_ERROR(FsyncPath(it->first, it->second));
  }
  return FsyncPath(dir, true);
}

// step-<digits> -> step; -1 for anything else.
int64_t StepOfName(const std::string& name) {
  if (!absl::StartsWith(name, "step-")) return -1;
  int64_t step = 0;
  const std::string digits = name.substr(5);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  if (!absl::SimpleAtoi(digits, &step)) return -1;
  return step;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<nlohmann::json> ReadStateJson(const std::string& dir) {
  RLHF_ASSIGN_OR_RETURN(std::string text, ReadFile(absl::StrCat(dir, "/", kStateFile)));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != kFormat) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/", kStateFile, ": not a ", kFormat,
                                                   " document"));
  }
  return j;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LearnerCheckpointer>> LearnerCheckpointer::Create(
    const LearnerCheckpointerOptions& options) {
  if (options.root.empty()) return absl::InvalidArgumentError("checkpoint root is empty");
  if (options.keep_last < 1) {
    return absl::InvalidArgumentError("rl.keep_checkpoints must be >= 1");
  }
  std::error_code ec;
  fs::create_directories(options.root, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", options.root, ": ", ec.message()));
  for (const auto& entry : fs::directory_iterator(options.root, ec)) {
    if (absl::StartsWith(entry.path().filename().string(), "tmp-")) {
      fs::remove_all(entry.path(), ec);
    }
  }
  return std::unique_ptr<LearnerCheckpointer>(new LearnerCheckpointer(options));
}

std::vector<std::string> LearnerCheckpointer::List() const {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.root, ec)) {
    const int64_t step = StepOfName(entry.path().filename().string());
    if (step < 0 || !entry.is_directory()) continue;
    if (!ReadStateJson(entry.path().string()).ok()) continue;  // incomplete or corrupt
    found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

absl::StatusOr<std::string> LearnerCheckpointer::Latest() const {
  std::vector<std::string> all = List();
  if (all.empty()) {
    return absl::NotFoundError(absl::StrCat("no complete checkpoint under ", options_.root));
  }
  return all.back();
}

absl::StatusOr<std::string> LearnerCheckpointer::Save(Trainer& trainer,
                                                      const nlohmann::json& cursor) {
  const TrainerState state = trainer.ExportState();
  const std::string name = absl::StrFormat("step-%08d", state.step);
  std::random_device rd;
  const std::string tmp =
      absl::StrCat(options_.root, "/tmp-", name, "-", absl::StrFormat("%08x", rd()));
  const std::string final_dir = absl::StrCat(options_.root, "/", name);
  std::error_code ec;
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", tmp, ": ", ec.message()));
  auto cleanup_on_error = [&](absl::Status s) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return s;
  };

  nlohmann::json meta = {{"learner_step", state.step}, {"policy_version", state.policy_version}};
  // The checkpoint carries the policy's tokenizer (files copied next to the weights).
  auto save_tokenizer = [&](const std::string& dir) -> absl::Status {
    if (options_.tokenizer == nullptr) return absl::OkStatus();
    absl::StatusOr<nlohmann::json> spec = SaveTokenizerFiles(*options_.tokenizer, dir);
    if (!spec.ok()) return spec.status();
    meta["tokenizer"] = *spec;
    return absl::OkStatus();
  };
  if (absl::Status s = save_tokenizer(tmp + "/policy"); !s.ok()) return cleanup_on_error(s);
  if (absl::Status s = SaveCheckpoint(tmp + "/policy", trainer.policy(), meta); !s.ok()) {
    return cleanup_on_error(s);
  }
  if (trainer.value_model()) {
    if (absl::Status s = save_tokenizer(tmp + "/value"); !s.ok()) return cleanup_on_error(s);
    if (absl::Status s = SaveCheckpoint(tmp + "/value", trainer.value_model(), meta); !s.ok()) {
      return cleanup_on_error(s);
    }
  }
  if (absl::Status s = WriteSafetensors(tmp + "/" + kOptimizerFile, state.optimizer_tensors);
      !s.ok()) {
    return cleanup_on_error(s);
  }
  nlohmann::json steps = nlohmann::json::object();
  for (const auto& [param, step] : state.optimizer_steps_by_param) steps[param] = step;
  const nlohmann::json doc = {
      {"format", kFormat},
      {"step", state.step},
      {"policy_version", state.policy_version},
      {"optimizer_steps", state.optimizer_steps},
      {"beta", state.beta},
      {"baseline", state.baseline},
      {"baseline_initialized", state.baseline_initialized},
      {"algorithm", std::string(RlAlgorithmName(trainer.options().algorithm))},
      {"has_value_model", static_cast<bool>(trainer.value_model())},
      {"optimizer_param_steps", steps},
      {"rng",
       {{"shuffle", state.shuffle_rng_state},
        {"torch_default_cpu", GeneratorStateHex(at::detail::getDefaultCPUGenerator())}}},
      {"cursor", cursor},
  };
  if (absl::Status s = WriteFileAtomically(tmp + "/" + kStateFile, doc.dump(1)); !s.ok()) {
    return cleanup_on_error(s);
  }
  if (absl::Status s = FsyncTree(tmp); !s.ok()) return cleanup_on_error(s);

  if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    return cleanup_on_error(absl::InternalError(
        absl::StrCat("rename ", tmp, " -> ", final_dir, ": ", std::strerror(errno))));
  }
  RLHF_RETURN_IF_ERROR(FsyncPath(options_.root, true));

  std::vector<std::string> all = List();
  for (size_t i = 0; i + options_.keep_last < all.size(); ++i) fs::remove_all(all[i], ec);
  return final_dir;
}

absl::StatusOr<RestoredLearner> RestoreLearner(const std::string& dir,
                                               const TrainerOptions& options) {
  RLHF_ASSIGN_OR_RETURN(nlohmann::json doc, ReadStateJson(dir));
  const bool has_value = doc.value("has_value_model", false);
  if (has_value != (options.algorithm == RlAlgorithm::kPpo)) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": checkpoint of algorithm ", doc.value("algorithm", "?"),
        " does not match rl.algorithm ", RlAlgorithmName(options.algorithm)));
  }
  RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint policy, LoadCheckpoint(dir + "/policy"));
  TransformerLM value{nullptr};
  if (has_value) {
    RLHF_ASSIGN_OR_RETURN(LoadedCheckpoint v, LoadCheckpoint(dir + "/value"));
    value = v.model;
  }
  RLHF_ASSIGN_OR_RETURN(SafetensorsContents opt,
                        ReadSafetensors(absl::StrCat(dir, "/", kOptimizerFile)));

  TrainerState state;
  const absl::Status parsed = TorchCall(
      [&] {
        state.step = doc.at("step").get<int64_t>();
        state.policy_version = doc.at("policy_version").get<int64_t>();
        state.optimizer_steps = doc.at("optimizer_steps").get<int64_t>();
        state.beta = doc.at("beta").get<double>();
        state.baseline = doc.at("baseline").get<double>();
        state.baseline_initialized = doc.at("baseline_initialized").get<bool>();
        state.shuffle_rng_state = doc.at("rng").at("shuffle").get<std::string>();
        for (const auto& [param, step] : doc.at("optimizer_param_steps").items()) {
          state.optimizer_steps_by_param.emplace_back(param, step.get<int64_t>());
        }
      },
      "learner_state.json");
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/", kStateFile, ": ", parsed.message()));
  }
  state.optimizer_tensors = std::move(opt.tensors);

  RLHF_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer,
                        Trainer::Create(options, policy.model, value));
  RLHF_RETURN_IF_ERROR(trainer->RestoreState(state));
  at::Generator global = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(global.mutex());
    RLHF_RETURN_IF_ERROR(
        SetGeneratorStateHex(global, doc.at("rng").value("torch_default_cpu", std::string())));
  }
  RestoredLearner out;
  out.trainer = std::move(trainer);
  out.cursor = doc.value("cursor", nlohmann::json::object());
  out.dir = dir;
  return out;
}

}  // namespace rlhf
