#include "core/data/prompt_template.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace rlhf {
namespace {
constexpr absl::string_view kPlaceholder = "{prompt}";
constexpr absl::string_view kAssistantCue = "\n\nAssistant:";
}  // namespace

absl::StatusOr<PromptTemplate> PromptTemplate::Parse(absl::string_view text) {
  PromptTemplate t;
  if (text.empty()) return t;
  const size_t at = text.find(kPlaceholder);
  if (at == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_template: '", text, "' has no {prompt} placeholder"));
  }
  if (text.find(kPlaceholder, at + 1) != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_template: '", text, "' has more than one {prompt}"));
  }
  t.prefix_ = std::string(text.substr(0, at));
  t.suffix_ = std::string(text.substr(at + kPlaceholder.size()));
  return t;
}

std::string PromptTemplate::Render(absl::string_view prompt) const {
  return absl::StrCat(prefix_, prompt, suffix_);
}

std::string PromptTemplate::text() const {
  return identity() ? "" : absl::StrCat(prefix_, kPlaceholder, suffix_);
}

absl::StatusOr<std::string> PromptTemplate::RenderChatPrompt(
    const std::vector<ChatMessage>& messages) const {
  if (messages.empty()) return absl::InvalidArgumentError("messages: empty conversation");
  std::string out;
  std::string previous;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (m.role == "system") {
      if (i != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": a system message must be the first message"));
      }
      absl::StrAppend(&out, m.content, "\n\n");
    } else if (m.role == "user" || m.role == "assistant") {
      if (m.role == previous) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": two '", m.role, "' turns in a row"));
      }
      if (m.role == "user") {
        absl::StrAppend(&out, Render(m.content));
      } else {
        absl::StrAppend(&out, m.content, "\n");
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": role '", m.role, "' is not one of system, user, assistant"));
    }
    previous = m.role;
  }
  if (previous != "user") {
    return absl::InvalidArgumentError(absl::StrCat(
        "messages[", messages.size() - 1, "]: a prompt must end with a user turn, got '",
        previous, "'"));
  }
  return out;
}

absl::StatusOr<std::pair<std::string, std::string>> PromptTemplate::RenderChatExample(
    const std::vector<ChatMessage>& messages) const {
  if (messages.empty() || messages.back().role != "assistant") {
    return absl::InvalidArgumentError(absl::StrCat(
        "messages[", messages.empty() ? 0 : messages.size() - 1,
        "]: an SFT conversation must end with an assistant turn (its response)"));
  }
  std::vector<ChatMessage> head(messages.begin(), messages.end() - 1);
  absl::StatusOr<std::string> prompt = RenderChatPrompt(head);
  if (!prompt.ok()) return prompt.status();
  return std::make_pair(*std::move(prompt), messages.back().content);
}

absl::StatusOr<SplitTranscripts> SplitSharedPrompt(absl::string_view chosen,
                                                   absl::string_view rejected) {
  size_t common = 0;
  while (common < chosen.size() && common < rejected.size() &&
         chosen[common] == rejected[common]) {
    ++common;
  }
  const size_t cue = chosen.substr(0, common).rfind(kAssistantCue);
  if (cue == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "field 'chosen': no shared prompt: the common prefix of 'chosen' and 'rejected' "
        "has no \"\\n\\nAssistant:\" (expected Anthropic HH transcripts)");
  }
  const size_t end = cue + kAssistantCue.size();
  SplitTranscripts out;
  out.prompt = std::string(chosen.substr(0, end));
  out.chosen = std::string(chosen.substr(end));
  out.rejected = std::string(rejected.substr(end));
  return out;
}

}  // namespace rlhf
