// The job's prompt template: how a user's prompt text becomes the text the policy sees.
// One function for every stage (data materialisation, SFT, reward model, RL prompts,
// evaluation), so the model is trained and evaluated on identically rendered prompts.
//
//   template   "User: {prompt}\nAssistant: "   (exactly one "{prompt}"; other braces are
//              literal). Empty = "{prompt}" = the prompt text as is (the built-in task).
//   Render("Name two red fruits.") = "User: Name two red fruits.\nAssistant: "
//
// The rendered prompt is followed directly by the response text (put a trailing space
// or newline into the template if the response should start after one).
//
// Chat records ({"messages": [{"role", "content"}, ...]}) render turn by turn:
//   system     content + "\n\n"            (only as the first message)
//   user       Render(content)
//   assistant  content + "\n"              (earlier turns; the last assistant turn of an
//                                           SFT record is its response, not rendered)
// e.g. [user "Hi", assistant "Hello", user "Bye"] with the template above renders
//   "User: Hi\nAssistant: Hello\nUser: Bye\nAssistant: ".
// Roles other than system/user/assistant, a system message after the first, two user or
// two assistant turns in a row are errors naming the message index.
//
// Thread-safety: immutable after construction.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf {

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;
};

class PromptTemplate {
 public:
  // The identity template ("{prompt}").
  PromptTemplate() = default;
  // InvalidArgument ("prompt_template: ...") unless `text` is empty or contains exactly
  // one "{prompt}".
  static absl::StatusOr<PromptTemplate> Parse(absl::string_view text);

  std::string Render(absl::string_view prompt) const;
  // Renders a whole conversation as a prompt (it must end with a user turn).
  absl::StatusOr<std::string> RenderChatPrompt(const std::vector<ChatMessage>& messages) const;
  // An SFT conversation: everything before the final assistant turn is the prompt, the
  // final assistant turn's content the response.
  absl::StatusOr<std::pair<std::string, std::string>> RenderChatExample(
      const std::vector<ChatMessage>& messages) const;

  bool identity() const { return prefix_.empty() && suffix_.empty(); }
  // The template text as configured ("" for the identity).
  std::string text() const;

 private:
  std::string prefix_, suffix_;
};

// Anthropic HH style: two full transcripts ("\n\nHuman: ...\n\nAssistant: ...") that
// share everything up to the final assistant turn. Returns {prompt, chosen, rejected}
// where prompt = the shared prefix up to and including its last "\n\nAssistant:" and
// chosen/rejected are the rest of each transcript. InvalidArgument (naming field
// 'chosen') when the shared prefix has no "\n\nAssistant:".
struct SplitTranscripts {
  std::string prompt, chosen, rejected;
};
absl::StatusOr<SplitTranscripts> SplitSharedPrompt(absl::string_view chosen,
                                                   absl::string_view rejected);

}  // namespace rlhf
