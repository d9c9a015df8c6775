#include "core/tokenizer/text_util.h"

#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace rlhf {

size_t Utf8CharLength(absl::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  unsigned char c = s[pos];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t min;
  if ((c & 0xE0) == 0xC0) len = 2, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, min = 0x10000;
  else return 1;
  if (pos + len > n) return 1;
  uint32_t cp = c & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    if ((s[pos + k] & 0xC0) != 0x80) return 1;
    cp = (cp << 6) | (s[pos + k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 1;
  return len;
}

uint32_t Utf8Decode(absl::string_view text, size_t pos, size_t len) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  if (len == 1) return s[pos] < 0x80 ? s[pos] : 0xDC00 + s[pos];
  uint32_t cp = s[pos] & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[pos + k] & 0x3F);
  return cp;
}

bool IsValidUtf8(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = Utf8CharLength(text, i);
    if (len == 1) return false;
    i += len;
  }
  return true;
}

namespace {
bool IsAscii(absl::string_view text) {
  for (char c : text)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}
}  // namespace

std::string UnicodeNormalize(absl::string_view text, UnicodeForm form) {
  // ASCII is invariant under every form; most text takes this path.
  if (IsAscii(text) || !IsValidUtf8(text)) return std::string(text);
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = nullptr;
  switch (form) {
    case UnicodeForm::kNfc: norm = icu::Normalizer2::getNFCInstance(status); break;
    case UnicodeForm::kNfd: norm = icu::Normalizer2::getNFDInstance(status); break;
    case UnicodeForm::kNfkc: norm = icu::Normalizer2::getNFKCInstance(status); break;
    case UnicodeForm::kNfkd: norm = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status) || norm == nullptr) return std::string(text);
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  norm->normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), sink,
                      nullptr, status);
  if (U_FAILURE(status)) return std::string(text);
  return out;
}

std::string Utf8ToLower(absl::string_view text) {
  if (IsAscii(text)) {
    std::string out(text);
    for (char& c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
  }
  if (!IsValidUtf8(text)) return std::string(text);
  icu::UnicodeString u =
      icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  u.toLower(icu::Locale::getRoot());
  std::string out;
  u.toUTF8String(out);
  return out;
}

std::string StripWhitespace(absl::string_view text, bool left, bool right) {
  size_t b = 0, e = text.size();
  if (left) {
    while (b < e) {
      size_t len = Utf8CharLength(text, b);
      if (!u_isUWhiteSpace(static_cast<UChar32>(Utf8Decode(text, b, len)))) break;
      b += len;
    }
  }
  if (right) {
    while (e > b) {
      size_t s = e - 1;
      while (s > b && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
      size_t len = Utf8CharLength(text, s);
      if (s + len != e) len = 1, s = e - 1;
      if (!u_isUWhiteSpace(static_cast<UChar32>(Utf8Decode(text, s, len)))) break;
      e = s;
    }
  }
  return std::string(text.substr(b, e - b));
}

int ParseHexByte(absl::string_view hex) {
  if (hex.size() != 2) return -1;
  int v = 0;
  for (char c : hex) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v * 16 + d;
  }
  return v;
}

std::array<int, 256> ByteLevelAlphabet() {
  std::array<int, 256> cp{};
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  int n = 0;
  for (int b = 0; b < 256; ++b) cp[b] = printable[b] ? b : 256 + n++;
  return cp;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  // The exception carries the byte position; it never leaves this function.
  try {
    return nlohmann::json::parse(*text);
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed JSON: ", e.what()));
  }
}

}  // namespace rlhf
