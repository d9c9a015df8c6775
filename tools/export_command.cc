#include "tools/export_command.h"

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/model/checkpoint.h"
#include "core/model/hf.h"
#include "tools/common_flags.h"

ABSL_FLAG(std::string, format, "hf", "export: output format (only \"hf\")");
ABSL_FLAG(std::string, checkpoint, "", "export: checkpoint directory to export (ours or HF)");
ABSL_FLAG(std::string, dtype, "F32", "export: on-disk dtype: F32, F16 or BF16");
ABSL_FLAG(int64_t, max_shard_mb, 5000, "export: shard size limit in MB (10^6 bytes)");
ABSL_FLAG(std::string, tokenizer_dir, "",
          "export: copy tokenizer files and generation_config.json from this directory "
          "(default: the HF directory the model was imported from, if any)");

namespace rlhf::tools {

int RunExportCommand(const std::vector<std::string>& args) {
  if (!args.empty()) return Fail("export", absl::InvalidArgumentError("unexpected argument " + args[0]));
  if (absl::GetFlag(FLAGS_format) != "hf") {
    return Fail("export", absl::InvalidArgumentError(absl::StrCat(
                              "--format must be \"hf\", got \"", absl::GetFlag(FLAGS_format), "\"")));
  }
  if (absl::GetFlag(FLAGS_checkpoint).empty()) {
    return Fail("export", absl::InvalidArgumentError("--checkpoint is required"));
  }
  if (absl::GetFlag(FLAGS_out).empty()) return Fail("export", absl::InvalidArgumentError("--out is required"));
  if (absl::GetFlag(FLAGS_max_shard_mb) <= 0) {
    return Fail("export", absl::InvalidArgumentError("--max_shard_mb must be > 0"));
  }
  auto loaded = LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!loaded.ok()) return Fail("export", loaded.status());
  HfExportOptions options;
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.max_shard_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_max_shard_mb)) * 1000000ull;
  options.tokenizer_dir = absl::GetFlag(FLAGS_tokenizer_dir);
  if (auto s = ExportHfDirectory(loaded->model, loaded->metadata, absl::GetFlag(FLAGS_out), options); !s.ok()) {
    return Fail("export", s);
  }
  std::printf("exported %s -> %s (HF, %s)\n", absl::GetFlag(FLAGS_checkpoint).c_str(),
              absl::GetFlag(FLAGS_out).c_str(), options.dtype.c_str());
  return 0;
}

}  // namespace rlhf::tools
