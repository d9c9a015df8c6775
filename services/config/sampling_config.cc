#include "services/config/sampling_config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace rlhf {

absl::StatusOr<SamplingOptions> SamplingOptionsFromConfig(const rlhf::v1::SamplingConfig& s) {
  SamplingOptions o;
  o.temperature = s.temperature();
  o.top_k = s.top_k();
  o.top_p = s.top_p();
  o.max_new_tokens = s.max_new_tokens();
  o.stop_tokens.assign(s.stop_tokens().begin(), s.stop_tokens().end());
  if (absl::Status st = ValidateSamplingOptions(o); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", st.message()));
  }
  return o;
}

rlhf::v1::SamplingConfig WithModelEos(rlhf::v1::SamplingConfig sampling, int32_t eos_id) {
  const auto& stops = sampling.stop_tokens();
  if (eos_id >= 0 && std::find(stops.begin(), stops.end(), eos_id) == stops.end()) {
    sampling.add_stop_tokens(eos_id);
  }
  return sampling;
}

}  // namespace rlhf
