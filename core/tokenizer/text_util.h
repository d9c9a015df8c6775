// Small UTF-8, Unicode and file helpers shared by the tokenizers (internal to
// core/tokenizer). Unicode work (normalization, case, whitespace) is ICU's.
// Thread-safety: all functions are pure.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf {

// Length of the UTF-8 character starting at text[pos]: 1..4, or 1 for a byte that does
// not start a valid sequence (so invalid input is walked byte by byte).
size_t Utf8CharLength(absl::string_view text, size_t pos);
// The code point of the `len`-byte character at text[pos] (as Utf8CharLength gave);
// an invalid single byte decodes to 0xDC00 + byte (never a valid code point).
uint32_t Utf8Decode(absl::string_view text, size_t pos, size_t len);
bool IsValidUtf8(absl::string_view text);

enum class UnicodeForm { kNfc, kNfd, kNfkc, kNfkd };
// Unicode normalization (ICU). Text that is not valid UTF-8 is returned unchanged.
std::string UnicodeNormalize(absl::string_view text, UnicodeForm form);
// Full Unicode lower-casing (ICU, root locale); invalid UTF-8 is returned unchanged.
std::string Utf8ToLower(absl::string_view text);
// Strips Unicode White_Space from the left and/or right end.
std::string StripWhitespace(absl::string_view text, bool left, bool right);

// "0A" -> 10; -1 if not two hex digits.
int ParseHexByte(absl::string_view hex);
// GPT-2's bytes_to_unicode(): byte -> code point of its printable stand-in ("Ġ" = space).
std::array<int, 256> ByteLevelAlphabet();

// Whole file; NotFound / errors name the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Parsed JSON; a parse error names the file, line and column.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path);

}  // namespace rlhf
