#include "core/tokenizer/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/locid.h>
#include <unicode/unistr.h>
#include <unicode/bytestream.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "core/tokenizer/text_util.h"

namespace rlhf {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------
// PCRE2 wrapper. Patterns are compiled with UTF + UCP (Unicode \s, \p{..}) and
// MATCH_INVALID_UTF, so bytes that are not valid UTF-8 never match (they stay in the
// gaps between matches) instead of making the match fail.
class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern,
                                                        const std::string& where) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()),
                                     pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error,
                                     &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": regex does not compile at offset ", offset, ": ",
          reinterpret_cast<const char*>(message), " (pattern ", pattern, ")"));
    }
    // JIT is a speed-up only; the interpreter gives the same matches if it fails.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return std::unique_ptr<Regex>(new Regex(code));
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // fn(begin, end) for every non-empty, non-overlapping match, left to right.
  template <typename Fn>
  void ForEachMatch(absl::string_view text, Fn&& fn) const {
    Scratch& scratch = ThreadScratch();
    size_t pos = 0;
    while (pos <= text.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                           pos, 0, scratch.match_data, scratch.context);
      if (rc < 0) break;  // PCRE2_ERROR_NOMATCH (or a resource limit: rest is a gap)
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.match_data);
      size_t begin = ov[0], end = ov[1];
      if (end > begin) {
        fn(begin, end);
        pos = end;
      } else {
        if (begin >= text.size()) break;
        pos = begin + Utf8CharLength(text, begin);
      }
    }
  }

 private:
  explicit Regex(pcre2_code* code) : code_(code) {}

  // Match data and JIT stack per thread: pcre2_code is shared read-only, these are not.
  struct Scratch {
    Scratch() {
      match_data = pcre2_match_data_create(4, nullptr);
      context = pcre2_match_context_create(nullptr);
      jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
      pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
    ~Scratch() {
      pcre2_match_data_free(match_data);
      pcre2_match_context_free(context);
      pcre2_jit_stack_free(jit_stack);
    }
    pcre2_match_data* match_data;
    pcre2_match_context* context;
    pcre2_jit_stack* jit_stack;
  };
  static Scratch& ThreadScratch() {
    thread_local Scratch scratch;
    return scratch;
  }

  pcre2_code* code_;
};

// PCRE2 syntax for a literal string.
std::string QuoteRegex(absl::string_view s) {
  std::string out = "\\Q";
  size_t start = 0;
  for (size_t e; (e = s.find("\\E", start)) != absl::string_view::npos; start = e + 2) {
    absl::StrAppend(&out, s.substr(start, e - start), "\\E\\\\E\\Q");
  }
  absl::StrAppend(&out, s.substr(start), "\\E");
  return out;
}

// ---------------------------------------------------------------------------------
// Field access with errors that name the file and the field.
struct JsonCtx {
  std::string file;
  absl::Status Error(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(file, ": field \"", field, "\" ", what));
  }
};

absl::StatusOr<std::string> GetString(const JsonCtx& ctx, const json& obj, const std::string& key,
                                      const std::string& path, const char* fallback = nullptr) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (fallback != nullptr) return std::string(fallback);
    return ctx.Error(path + "." + key, "is required (string)");
  }
  if (!it->is_string()) return ctx.Error(path + "." + key, "must be a string");
  return it->get<std::string>();
}

absl::StatusOr<bool> GetBool(const JsonCtx& ctx, const json& obj, const std::string& key,
                             const std::string& path, bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return ctx.Error(path + "." + key, "must be true or false");
  return it->get<bool>();
}

absl::StatusOr<int64_t> GetInt(const JsonCtx& ctx, const json& obj, const std::string& key,
                               const std::string& path, int64_t fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return ctx.Error(path + "." + key, "must be an integer");
  return it->get<int64_t>();
}

// {"String": s} or {"Regex": r} -> a PCRE2 pattern.
absl::StatusOr<std::string> GetPattern(const JsonCtx& ctx, const json& obj,
                                       const std::string& path) {
  auto it = obj.find("pattern");
  if (it == obj.end() || !it->is_object()) {
    return ctx.Error(path + ".pattern", "is required ({\"String\": ...} or {\"Regex\": ...})");
  }
  if (it->contains("Regex") && (*it)["Regex"].is_string()) {
    return (*it)["Regex"].get<std::string>();
  }
  if (it->contains("String") && (*it)["String"].is_string()) {
    return QuoteRegex((*it)["String"].get<std::string>());
  }
  return ctx.Error(path + ".pattern", "must hold a string \"String\" or \"Regex\"");
}

// ---------------------------------------------------------------------------------
// Normalizers: each rewrites a section of text in place.
using NormStep = std::function<void(std::string&)>;

absl::Status AddNormalizer(const JsonCtx& ctx, const json& cfg, const std::string& path,
                           std::vector<NormStep>* steps) {
  if (cfg.is_null()) return absl::OkStatus();
  if (!cfg.is_object()) return ctx.Error(path, "must be an object or null");
  auto type_or = GetString(ctx, cfg, "type", path);
  if (!type_or.ok()) return type_or.status();
  const std::string& type = *type_or;
  if (type == "Sequence") {
    auto it = cfg.find("normalizers");
    if (it == cfg.end() || !it->is_array()) {
      return ctx.Error(path + ".normalizers", "is required (array)");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = AddNormalizer(ctx, (*it)[i], absl::StrCat(path, ".normalizers[", i, "]"), steps);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    UnicodeForm form = type == "NFC"    ? UnicodeForm::kNfc
                       : type == "NFD"  ? UnicodeForm::kNfd
                       : type == "NFKC" ? UnicodeForm::kNfkc
                                        : UnicodeForm::kNfkd;
    steps->push_back([form](std::string& s) { s = UnicodeNormalize(s, form); });
    return absl::OkStatus();
  }
  if (type == "Lowercase") {
    steps->push_back([](std::string& s) { s = Utf8ToLower(s); });
    return absl::OkStatus();
  }
  if (type == "Prepend") {
    auto prepend = GetString(ctx, cfg, "prepend", path);
    if (!prepend.ok()) return prepend.status();
    steps->push_back([p = *prepend](std::string& s) {
      if (!s.empty()) s.insert(0, p);
    });
    return absl::OkStatus();
  }
  if (type == "Replace") {
    auto pattern = GetPattern(ctx, cfg, path);
    if (!pattern.ok()) return pattern.status();
    auto content = GetString(ctx, cfg, "content", path);
    if (!content.ok()) return content.status();
    auto regex = Regex::Compile(*pattern, absl::StrCat(ctx.file, ": ", path, ".pattern"));
    if (!regex.ok()) return regex.status();
    std::shared_ptr<Regex> re = std::move(*regex);
    steps->push_back([re, c = *content](std::string& s) {
      std::string out;
      size_t last = 0;
      re->ForEachMatch(s, [&](size_t b, size_t e) {
        out.append(s, last, b - last);
        out += c;
        last = e;
      });
      out.append(s, last, std::string::npos);
      s = std::move(out);
    });
    return absl::OkStatus();
  }
  if (type == "Strip") {
    auto left = GetBool(ctx, cfg, "left", path, true);
    auto right = GetBool(ctx, cfg, "right", path, true);
    if (!left.ok()) return left.status();
    if (!right.ok()) return right.status();
    steps->push_back([l = *left, r = *right](std::string& s) { s = StripWhitespace(s, l, r); });
    return absl::OkStatus();
  }
  return ctx.Error(path + ".type", absl::StrCat("\"", type,
                                                "\" is not a supported normalizer (supported: "
                                                "Sequence, NFC, NFD, NFKC, NFKD, Lowercase, "
                                                "Prepend, Replace, Strip)"));
}

// ---------------------------------------------------------------------------------
// Pre-tokenizers: each splits every piece further.
using Pieces = std::vector<std::string>;
using PreStep = std::function<void(Pieces&, int section_index)>;

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// HF's Split semantics: the pattern matches delimiters (invert: the content).
void SplitOne(const Regex& re, SplitBehavior behavior, bool invert, const std::string& text,
              Pieces* out) {
  // (begin, end, is_match)
  struct Span {
    size_t b, e;
    bool match;
  };
  std::vector<Span> spans;
  size_t last = 0;
  re.ForEachMatch(text, [&](size_t b, size_t e) {
    if (b > last) spans.push_back({last, b, false});
    spans.push_back({b, e, true});
    last = e;
  });
  if (last < text.size()) spans.push_back({last, text.size(), false});
  if (invert) {
    for (Span& s : spans) s.match = !s.match;
  }
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& s : spans)
        if (!s.match) out->emplace_back(text, s.b, s.e - s.b);
      return;
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) out->emplace_back(text, s.b, s.e - s.b);
      return;
    case SplitBehavior::kContiguous: {
      size_t i = 0;
      while (i < spans.size()) {
        size_t j = i + 1;
        while (j < spans.size() && spans[j].match && spans[i].match) ++j;
        out->emplace_back(text, spans[i].b, spans[j - 1].e - spans[i].b);
        i = j;
      }
      return;
    }
    case SplitBehavior::kMergedWithPrevious: {
      size_t start = 0;
      bool open = false;
      for (const Span& s : spans) {
        if (!open) start = s.b;
        open = true;
        if (s.match) {
          out->emplace_back(text, start, s.e - start);
          open = false;
        }
      }
      if (open) out->emplace_back(text, start, text.size() - start);
      return;
    }
    case SplitBehavior::kMergedWithNext: {
      size_t start = 0;
      bool open = false;
      for (const Span& s : spans) {
        if (s.match && open) {
          out->emplace_back(text, start, s.b - start);
          open = false;
        }
        if (!open) start = s.b;
        open = true;
      }
      if (open) out->emplace_back(text, start, text.size() - start);
      return;
    }
  }
}

PreStep MakeSplitStep(std::shared_ptr<Regex> re, SplitBehavior behavior, bool invert) {
  return [re = std::move(re), behavior, invert](Pieces& pieces, int) {
    Pieces out;
    out.reserve(pieces.size() * 4);
    for (const std::string& p : pieces) SplitOne(*re, behavior, invert, p, &out);
    pieces = std::move(out);
  };
}

constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct PreTokenizerInfo {
  bool byte_level = false;
};

absl::Status AddPreTokenizer(const JsonCtx& ctx, const json& cfg, const std::string& path,
                             std::vector<PreStep>* steps, PreTokenizerInfo* info) {
  if (cfg.is_null()) return absl::OkStatus();
  if (!cfg.is_object()) return ctx.Error(path, "must be an object or null");
  auto type_or = GetString(ctx, cfg, "type", path);
  if (!type_or.ok()) return type_or.status();
  const std::string& type = *type_or;
  auto compile = [&](const std::string& pattern) {
    return Regex::Compile(pattern, absl::StrCat(ctx.file, ": ", path, ".pattern"));
  };
  if (type == "Sequence") {
    auto it = cfg.find("pretokenizers");
    if (it == cfg.end() || !it->is_array()) {
      return ctx.Error(path + ".pretokenizers", "is required (array)");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = AddPreTokenizer(ctx, (*it)[i],
                                       absl::StrCat(path, ".pretokenizers[", i, "]"), steps, info);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "Split") {
    auto pattern = GetPattern(ctx, cfg, path);
    if (!pattern.ok()) return pattern.status();
    auto behavior_name = GetString(ctx, cfg, "behavior", path, "Isolated");
    if (!behavior_name.ok()) return behavior_name.status();
    auto invert = GetBool(ctx, cfg, "invert", path, false);
    if (!invert.ok()) return invert.status();
    SplitBehavior behavior;
    if (*behavior_name == "Removed") behavior = SplitBehavior::kRemoved;
    else if (*behavior_name == "Isolated") behavior = SplitBehavior::kIsolated;
    else if (*behavior_name == "MergedWithPrevious") behavior = SplitBehavior::kMergedWithPrevious;
    else if (*behavior_name == "MergedWithNext") behavior = SplitBehavior::kMergedWithNext;
    else if (*behavior_name == "Contiguous") behavior = SplitBehavior::kContiguous;
    else return ctx.Error(path + ".behavior", absl::StrCat("\"", *behavior_name, "\" is unknown"));
    auto re = compile(*pattern);
    if (!re.ok()) return re.status();
    steps->push_back(MakeSplitStep(std::move(*re), behavior, *invert));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    auto prefix = GetBool(ctx, cfg, "add_prefix_space", path, true);
    auto use_regex = GetBool(ctx, cfg, "use_regex", path, true);
    if (!prefix.ok()) return prefix.status();
    if (!use_regex.ok()) return use_regex.status();
    info->byte_level = true;
    if (*prefix) {
      steps->push_back([](Pieces& pieces, int) {
        for (std::string& p : pieces)
          if (p.empty() || p[0] != ' ') p.insert(0, " ");
      });
    }
    if (*use_regex) {
      auto re = compile(kGpt2Pattern);
      if (!re.ok()) return re.status();
      steps->push_back(MakeSplitStep(std::move(*re), SplitBehavior::kIsolated, false));
    }
    // The byte -> unicode alphabet itself is undone at load (raw-byte vocabulary).
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    auto replacement = GetString(ctx, cfg, "replacement", path, "\xe2\x96\x81");
    if (!replacement.ok()) return replacement.status();
    auto add_prefix = GetBool(ctx, cfg, "add_prefix_space", path, true);
    if (!add_prefix.ok()) return add_prefix.status();
    std::string scheme = *add_prefix ? "always" : "never";
    if (cfg.contains("prepend_scheme") && cfg["prepend_scheme"].is_string()) {
      scheme = cfg["prepend_scheme"].get<std::string>();
    }
    if (scheme != "always" && scheme != "first" && scheme != "never") {
      return ctx.Error(path + ".prepend_scheme", absl::StrCat("\"", scheme, "\" is unknown"));
    }
    auto split = GetBool(ctx, cfg, "split", path, true);
    if (!split.ok()) return split.status();
    std::string rep = *replacement;
    steps->push_back([rep, scheme](Pieces& pieces, int section_index) {
      for (std::string& p : pieces) {
        std::string out;
        for (char c : p) {
          if (c == ' ') out += rep;
          else out.push_back(c);
        }
        if ((scheme == "always" || (scheme == "first" && section_index == 0)) &&
            out.compare(0, rep.size(), rep) != 0) {
          out.insert(0, rep);
        }
        p = std::move(out);
      }
    });
    if (*split) {
      auto re = compile(QuoteRegex(rep));
      if (!re.ok()) return re.status();
      steps->push_back(MakeSplitStep(std::move(*re), SplitBehavior::kMergedWithNext, false));
    }
    return absl::OkStatus();
  }
  if (type == "Digits") {
    auto individual = GetBool(ctx, cfg, "individual_digits", path, false);
    if (!individual.ok()) return individual.status();
    auto re = compile(*individual ? "\\p{N}" : "\\p{N}+");
    if (!re.ok()) return re.status();
    steps->push_back(MakeSplitStep(std::move(*re), SplitBehavior::kIsolated, false));
    return absl::OkStatus();
  }
  if (type == "Whitespace") {
    auto re = compile("\\w+|[^\\w\\s]+");
    if (!re.ok()) return re.status();
    steps->push_back(MakeSplitStep(std::move(*re), SplitBehavior::kRemoved, true));
    return absl::OkStatus();
  }
  if (type == "WhitespaceSplit") {
    auto re = compile("\\s+");
    if (!re.ok()) return re.status();
    steps->push_back(MakeSplitStep(std::move(*re), SplitBehavior::kRemoved, false));
    return absl::OkStatus();
  }
  return ctx.Error(path + ".type",
                   absl::StrCat("\"", type,
                                "\" is not a supported pre_tokenizer (supported: Sequence, "
                                "Split, ByteLevel, Metaspace, Digits, Whitespace, "
                                "WhitespaceSplit)"));
}

// ---------------------------------------------------------------------------------
// Decoders: each rewrites the list of token strings.
using Tokens = std::vector<std::string>;
using DecStep = std::function<void(Tokens&)>;

struct DecoderInfo {
  bool byte_level = false;
};

std::string ReplaceAll(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t last = 0;
  for (size_t p; (p = s.find(from, last)) != std::string::npos; last = p + from.size()) {
    out.append(s, last, p - last);
    out += to;
  }
  out.append(s, last, std::string::npos);
  return out;
}

absl::Status AddDecoder(const JsonCtx& ctx, const json& cfg, const std::string& path,
                        std::vector<DecStep>* steps, DecoderInfo* info) {
  if (cfg.is_null()) return absl::OkStatus();
  if (!cfg.is_object()) return ctx.Error(path, "must be an object or null");
  auto type_or = GetString(ctx, cfg, "type", path);
  if (!type_or.ok()) return type_or.status();
  const std::string& type = *type_or;
  if (type == "Sequence") {
    auto it = cfg.find("decoders");
    if (it == cfg.end() || !it->is_array()) return ctx.Error(path + ".decoders", "is required (array)");
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s =
          AddDecoder(ctx, (*it)[i], absl::StrCat(path, ".decoders[", i, "]"), steps, info);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    info->byte_level = true;  // raw-byte vocabulary: nothing to undo
    return absl::OkStatus();
  }
  if (type == "Replace") {
    auto it = cfg.find("pattern");
    if (it == cfg.end() || !it->is_object() || !it->contains("String") ||
        !(*it)["String"].is_string()) {
      return ctx.Error(path + ".pattern", "must be {\"String\": ...} (regex decoders are not supported)");
    }
    auto content = GetString(ctx, cfg, "content", path);
    if (!content.ok()) return content.status();
    steps->push_back([from = (*it)["String"].get<std::string>(), to = *content](Tokens& t) {
      for (std::string& s : t) s = ReplaceAll(s, from, to);
    });
    return absl::OkStatus();
  }
  if (type == "ByteFallback") {
    steps->push_back([](Tokens& t) {
      Tokens out;
      std::string bytes;
      bool in_bytes = false;
      for (std::string& s : t) {
        int byte = -1;
        if (s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>') {
          byte = ParseHexByte(s.substr(3, 2));
        }
        if (byte >= 0) {
          bytes.push_back(static_cast<char>(byte));
          in_bytes = true;
        } else {
          if (in_bytes) out.push_back(std::move(bytes));
          bytes.clear();
          in_bytes = false;
          out.push_back(std::move(s));
        }
      }
      if (in_bytes) out.push_back(std::move(bytes));
      t = std::move(out);
    });
    return absl::OkStatus();
  }
  if (type == "Fuse") {
    steps->push_back([](Tokens& t) {
      std::string all;
      for (const std::string& s : t) all += s;
      t.assign(1, std::move(all));
    });
    return absl::OkStatus();
  }
  if (type == "Strip") {
    auto content = GetString(ctx, cfg, "content", path, " ");
    auto start = GetInt(ctx, cfg, "start", path, 0);
    auto stop = GetInt(ctx, cfg, "stop", path, 0);
    if (!content.ok()) return content.status();
    if (!start.ok()) return start.status();
    if (!stop.ok()) return stop.status();
    steps->push_back([c = *content, start = *start, stop = *stop](Tokens& t) {
      for (std::string& s : t) {
        size_t b = 0, e = s.size();
        for (int64_t i = 0; i < start && b + c.size() <= e && s.compare(b, c.size(), c) == 0; ++i)
          b += c.size();
        for (int64_t i = 0; i < stop && e >= b + c.size() && s.compare(e - c.size(), c.size(), c) == 0; ++i)
          e -= c.size();
        s = s.substr(b, e - b);
      }
    });
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    auto replacement = GetString(ctx, cfg, "replacement", path, "\xe2\x96\x81");
    if (!replacement.ok()) return replacement.status();
    auto add_prefix = GetBool(ctx, cfg, "add_prefix_space", path, true);
    if (!add_prefix.ok()) return add_prefix.status();
    bool strip_first = *add_prefix;
    if (cfg.contains("prepend_scheme") && cfg["prepend_scheme"].is_string()) {
      strip_first = cfg["prepend_scheme"].get<std::string>() != "never";
    }
    steps->push_back([rep = *replacement, strip_first](Tokens& t) {
      for (size_t i = 0; i < t.size(); ++i) {
        t[i] = ReplaceAll(t[i], rep, " ");
        if (strip_first && i == 0 && !t[i].empty() && t[i][0] == ' ') t[i].erase(0, 1);
      }
    });
    return absl::OkStatus();
  }
  return ctx.Error(path + ".type",
                   absl::StrCat("\"", type,
                                "\" is not a supported decoder (supported: Sequence, ByteLevel, "
                                "Replace, ByteFallback, Fuse, Strip, Metaspace)"));
}

// ---------------------------------------------------------------------------------
// Leftmost-longest matcher for added tokens (a byte trie).
class AddedTokenMatcher {
 public:
  void Add(const std::string& content, int index) {
    if (content.empty()) return;
    int node = 0;
    for (unsigned char c : content) {
      first_[content[0] & 0xff] = true;
      int next = Child(node, c);
      if (next < 0) {
        next = static_cast<int>(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].children.emplace_back(c, next);
      }
      node = next;
    }
    nodes_[node].index = index;
  }
  bool empty() const { return nodes_.size() == 1; }
  // Longest match starting at `pos`: (token index, length) or (-1, 0).
  std::pair<int, size_t> MatchAt(absl::string_view text, size_t pos) const {
    if (!first_[static_cast<unsigned char>(text[pos])]) return {-1, 0};
    int node = 0;
    std::pair<int, size_t> best{-1, 0};
    for (size_t j = pos; j < text.size(); ++j) {
      node = Child(node, static_cast<unsigned char>(text[j]));
      if (node < 0) break;
      if (nodes_[node].index >= 0) best = {nodes_[node].index, j + 1 - pos};
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int index = -1;
  };
  int Child(int node, unsigned char c) const {
    for (const auto& [k, v] : nodes_[node].children)
      if (k == c) return v;
    return -1;
  }
  std::vector<Node> nodes_ = std::vector<Node>(1);
  std::array<bool, 256> first_{};
};

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
  bool lstrip;
  bool rstrip;
};

// Bounded word -> ids cache, sharded so that concurrent encoders rarely share a lock.
class WordCache {
 public:
  static constexpr size_t kShards = 32;
  static constexpr size_t kMaxEntriesPerShard = 8192;
  static constexpr size_t kMaxWordBytes = 256;

  bool Lookup(absl::string_view word, std::vector<int32_t>* out) const {
    const Shard& shard = shards_[ShardOf(word)];
    absl::ReaderMutexLock lock(&shard.mu);
    auto it = shard.map.find(word);
    if (it == shard.map.end()) return false;
    out->insert(out->end(), it->second.begin(), it->second.end());
    return true;
  }
  void Insert(absl::string_view word, const int32_t* ids, size_t n) const {
    if (word.size() > kMaxWordBytes) return;
    Shard& shard = shards_[ShardOf(word)];
    absl::MutexLock lock(&shard.mu);
    // Clearing (not LRU) keeps this simple; hit rates on text stay high anyway.
    if (shard.map.size() >= kMaxEntriesPerShard) shard.map.clear();
    shard.map.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
  }

 private:
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map ABSL_GUARDED_BY(mu);
  };
  static size_t ShardOf(absl::string_view word) {
    return absl::HashOf(word) % kShards;
  }
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace

// ---------------------------------------------------------------------------------
struct BpeTokenizer::Impl {
  nlohmann::json spec;
  std::string name;

  // Byte-level: vocabulary keys are raw bytes and words start as single bytes.
  // Otherwise (SentencePiece-style): keys as written and words start as UTF-8 chars.
  bool byte_level = false;
  absl::flat_hash_map<std::string, int32_t> vocab;      // model vocabulary (internal form)
  absl::flat_hash_map<std::string, int32_t> file_vocab;  // as written in the file + added
  std::vector<std::string> id_to_token;                  // internal form; added: content
  std::vector<uint8_t> special;                          // per id
  std::vector<uint8_t> known;                            // per id: has a token
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  absl::flat_hash_map<uint64_t, Merge> merges;
  std::array<int32_t, 256> byte_ids;  // single-byte token (byte-level) or <0xXX> (fallback)
  bool byte_fallback = false;
  bool ignore_merges = false;
  bool fuse_unk = false;
  int32_t unk_id = -1;

  std::vector<AddedToken> added;
  AddedTokenMatcher matcher;
  std::vector<NormStep> normalizer;
  std::vector<PreStep> pre_tokenizer;
  std::vector<DecStep> decoder;
  bool trivial_decoder = true;  // decoding is plain concatenation

  int32_t bos = -1, eos = -1, pad = -1;
  WordCache cache;

  static uint64_t Key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void EncodeWord(absl::string_view word, std::vector<int32_t>* out) const;
  void EncodeSection(std::string section, int section_index, std::vector<int32_t>* out) const;
  std::string DecodeIds(const std::vector<int32_t>& ids, bool skip_special) const;
};

void BpeTokenizer::Impl::EncodeWord(absl::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (cache.Lookup(word, out)) return;

  struct Sym {
    int32_t id;  // -1: not in the vocabulary (byte fallback / unk at the end)
    int32_t prev, next;
    uint32_t begin, len;
  };
  std::vector<Sym> syms;
  syms.reserve(word.size());
  for (size_t i = 0; i < word.size();) {
    size_t n = byte_level ? 1 : Utf8CharLength(word, i);
    int32_t id;
    if (byte_level) {
      id = byte_ids[static_cast<unsigned char>(word[i])];
    } else {
      auto it = vocab.find(word.substr(i, n));
      id = it == vocab.end() ? -1 : it->second;
    }
    int32_t k = static_cast<int32_t>(syms.size());
    syms.push_back({id, k - 1, k + 1, static_cast<uint32_t>(i), static_cast<uint32_t>(n)});
    i += n;
  }
  syms.back().next = -1;

  // Min-heap of candidate merges by (rank, position); stale entries are skipped.
  struct Cand {
    int32_t rank;
    uint32_t pos;
    int32_t left, right;
    int32_t left_id, right_id;
    bool operator>(const Cand& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Cand> heap;
  auto push = [&](int32_t l) {
    int32_t r = syms[l].next;
    if (r < 0 || syms[l].id < 0 || syms[r].id < 0) return;
    auto it = merges.find(Key(syms[l].id, syms[r].id));
    if (it == merges.end()) return;
    heap.push_back({it->second.rank, syms[l].begin, l, r, syms[l].id, syms[r].id});
    std::push_heap(heap.begin(), heap.end(), std::greater<Cand>());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Cand>());
    Cand c = heap.back();
    heap.pop_back();
    Sym& l = syms[c.left];
    if (l.len == 0 || l.id != c.left_id || l.next != c.right) continue;
    Sym& r = syms[c.right];
    if (r.len == 0 || r.id != c.right_id) continue;
    l.id = merges.find(Key(c.left_id, c.right_id))->second.id;
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    r.len = 0;
    if (l.prev >= 0) push(l.prev);
    push(c.left);
  }

  const size_t start = out->size();
  bool last_unk = false;
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const Sym& s = syms[i];
    if (s.id >= 0) {
      out->push_back(s.id);
      last_unk = false;
      continue;
    }
    absl::string_view piece = word.substr(s.begin, s.len);
    bool all_bytes = byte_fallback;
    if (all_bytes) {
      for (char ch : piece) all_bytes = all_bytes && byte_ids[static_cast<unsigned char>(ch)] >= 0;
    }
    if (all_bytes) {
      for (char ch : piece) out->push_back(byte_ids[static_cast<unsigned char>(ch)]);
      last_unk = false;
    } else if (unk_id >= 0) {
      if (!(fuse_unk && last_unk)) out->push_back(unk_id);
      last_unk = true;
    }
  }
  cache.Insert(word, out->data() + start, out->size() - start);
}

void BpeTokenizer::Impl::EncodeSection(std::string section, int section_index,
                                       std::vector<int32_t>* out) const {
  for (const NormStep& step : normalizer) step(section);
  if (section.empty()) return;
  if (pre_tokenizer.empty()) {
    EncodeWord(section, out);
    return;
  }
  Pieces pieces;
  pieces.push_back(std::move(section));
  for (const PreStep& step : pre_tokenizer) step(pieces, section_index);
  for (const std::string& p : pieces) EncodeWord(p, out);
}

std::string BpeTokenizer::Impl::DecodeIds(const std::vector<int32_t>& ids,
                                          bool skip_special) const {
  const int32_t n = static_cast<int32_t>(id_to_token.size());
  auto keep = [&](int32_t id) {
    return id >= 0 && id < n && known[id] && !(skip_special && special[id]);
  };
  if (trivial_decoder) {
    std::string text;
    for (int32_t id : ids)
      if (keep(id)) text += id_to_token[id];
    return text;
  }
  Tokens tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids)
    if (keep(id)) tokens.push_back(id_to_token[id]);
  for (const DecStep& step : decoder) step(tokens);
  std::string text;
  for (const std::string& t : tokens) text += t;
  return text;
}

// ---------------------------------------------------------------------------------
namespace {

absl::Status ResolveSpecial(const BpeTokenizer& tok, const std::string& what,
                            const std::string& token, int32_t* id) {
  if (token.empty()) return absl::OkStatus();
  *id = tok.TokenToId(token);
  if (*id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " token \"", token,
                                                   "\" is not in the tokenizer's vocabulary"));
  }
  return absl::OkStatus();
}

}  // namespace

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromHfJson(
    const nlohmann::json& j, const std::string& file, const SpecialTokenNames& names,
    nlohmann::json spec) {
  JsonCtx ctx{file};
  if (!j.is_object()) return absl::InvalidArgumentError(file + ": must be a JSON object");
  auto impl = std::make_unique<Impl>();
  impl->spec = std::move(spec);
  impl->name = impl->spec.is_object() && impl->spec.contains("type") && impl->spec["type"].is_string()
                   ? impl->spec["type"].get<std::string>()
                   : "hf";

  auto mit = j.find("model");
  if (mit == j.end() || !mit->is_object()) return ctx.Error("model", "is required (object)");
  const json& model = *mit;
  auto type = GetString(ctx, model, "type", "model", "BPE");
  if (!type.ok()) return type.status();
  if (*type != "BPE") {
    return absl::UnimplementedError(absl::StrCat(
        file, ": field \"model.type\" is \"", *type, "\"; only \"BPE\" models are supported"));
  }
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto v = GetString(ctx, model, field, "model", "");
    if (!v.ok()) return v.status();
    if (!v->empty()) {
      return absl::UnimplementedError(
          absl::StrCat(file, ": field \"model.", field, "\" = \"", *v, "\" is not supported"));
    }
  }
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0)) {
    return absl::UnimplementedError(file + ": field \"model.dropout\": BPE dropout is not supported");
  }
  auto byte_fallback = GetBool(ctx, model, "byte_fallback", "model", false);
  auto ignore_merges = GetBool(ctx, model, "ignore_merges", "model", false);
  auto fuse_unk = GetBool(ctx, model, "fuse_unk", "model", false);
  if (!byte_fallback.ok()) return byte_fallback.status();
  if (!ignore_merges.ok()) return ignore_merges.status();
  if (!fuse_unk.ok()) return fuse_unk.status();
  impl->byte_fallback = *byte_fallback;
  impl->ignore_merges = *ignore_merges;
  impl->fuse_unk = *fuse_unk;

  // Pipeline first: whether the model is byte-level decides the vocabulary's form.
  PreTokenizerInfo pre_info;
  DecoderInfo dec_info;
  if (j.contains("normalizer")) {
    absl::Status s = AddNormalizer(ctx, j["normalizer"], "normalizer", &impl->normalizer);
    if (!s.ok()) return s;
  }
  if (j.contains("pre_tokenizer")) {
    absl::Status s =
        AddPreTokenizer(ctx, j["pre_tokenizer"], "pre_tokenizer", &impl->pre_tokenizer, &pre_info);
    if (!s.ok()) return s;
  }
  if (j.contains("decoder")) {
    absl::Status s = AddDecoder(ctx, j["decoder"], "decoder", &impl->decoder, &dec_info);
    if (!s.ok()) return s;
  }
  if (dec_info.byte_level && !pre_info.byte_level) {
    return absl::UnimplementedError(
        file + ": field \"decoder\" is ByteLevel but \"pre_tokenizer\" is not; not supported");
  }
  impl->byte_level = pre_info.byte_level;
  impl->trivial_decoder = impl->decoder.empty();

  auto vit = model.find("vocab");
  if (vit == model.end() || !vit->is_object()) return ctx.Error("model.vocab", "is required (object)");
  int64_t max_id = -1;
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX) {
      return ctx.Error("model.vocab[\"" + it.key() + "\"]", "must be a non-negative integer id");
    }
    max_id = std::max(max_id, it->get<int64_t>());
  }
  auto ait = j.find("added_tokens");
  if (ait != j.end() && !ait->is_null() && !ait->is_array()) {
    return ctx.Error("added_tokens", "must be an array");
  }
  if (ait != j.end() && ait->is_array()) {
    for (size_t i = 0; i < ait->size(); ++i) {
      const json& a = (*ait)[i];
      std::string path = absl::StrCat("added_tokens[", i, "]");
      if (!a.is_object()) return ctx.Error(path, "must be an object");
      auto id = GetInt(ctx, a, "id", path, -1);
      auto content = GetString(ctx, a, "content", path);
      auto special = GetBool(ctx, a, "special", path, false);
      auto lstrip = GetBool(ctx, a, "lstrip", path, false);
      auto rstrip = GetBool(ctx, a, "rstrip", path, false);
      if (!id.ok()) return id.status();
      if (!content.ok()) return content.status();
      if (!special.ok()) return special.status();
      if (!lstrip.ok()) return lstrip.status();
      if (!rstrip.ok()) return rstrip.status();
      if (*id < 0 || *id > INT32_MAX) return ctx.Error(path + ".id", "is required (non-negative integer)");
      impl->added.push_back({*content, static_cast<int32_t>(*id), *special, *lstrip, *rstrip});
      max_id = std::max(max_id, *id);
    }
  }
  const size_t n = static_cast<size_t>(max_id + 1);
  impl->id_to_token.assign(n, std::string());
  impl->special.assign(n, 0);
  impl->known.assign(n, 0);
  impl->byte_ids.fill(-1);

  const std::array<int, 256> byte_to_cp = ByteLevelAlphabet();
  absl::flat_hash_map<uint32_t, int> cp_to_byte;
  for (int b = 0; b < 256; ++b) cp_to_byte[byte_to_cp[b]] = b;
  impl->vocab.reserve(vit->size());
  impl->file_vocab.reserve(vit->size() + impl->added.size());
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    const int32_t id = static_cast<int32_t>(it->get<int64_t>());
    const std::string& token = it.key();
    impl->file_vocab[token] = id;
    std::string internal = token;
    if (impl->byte_level) {
      // Undo GPT-2's byte -> unicode alphabet; tokens outside it are unreachable by BPE.
      std::string bytes;
      bool ok = true;
      for (size_t i = 0; i < token.size() && ok;) {
        size_t len = Utf8CharLength(token, i);
        uint32_t cp = Utf8Decode(token, i, len);
        auto b = cp_to_byte.find(cp);
        if (b == cp_to_byte.end()) ok = false;
        else bytes.push_back(static_cast<char>(b->second));
        i += len;
      }
      if (!ok) {
        impl->id_to_token[id] = token;
        impl->known[id] = 1;
        continue;
      }
      internal = std::move(bytes);
    }
    impl->id_to_token[id] = internal;
    impl->known[id] = 1;
    impl->vocab[internal] = id;
  }
  if (impl->byte_level) {
    for (int b = 0; b < 256; ++b) {
      auto it = impl->vocab.find(std::string(1, static_cast<char>(b)));
      if (it != impl->vocab.end()) impl->byte_ids[b] = it->second;
    }
  } else if (impl->byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      auto it = impl->vocab.find(absl::StrFormat("<0x%02X>", b));
      if (it != impl->vocab.end()) impl->byte_ids[b] = it->second;
    }
  }
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& a = impl->added[i];
    impl->id_to_token[a.id] = a.content;
    impl->known[a.id] = 1;
    impl->special[a.id] = a.special ? 1 : 0;
    impl->file_vocab[a.content] = a.id;
    impl->matcher.Add(a.content, static_cast<int>(i));
  }

  auto git = model.find("merges");
  if (git == model.end() || !git->is_array()) return ctx.Error("model.merges", "is required (array)");
  impl->merges.reserve(git->size());
  for (size_t i = 0; i < git->size(); ++i) {
    const json& m = (*git)[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) {
        return ctx.Error(absl::StrCat("model.merges[", i, "]"), "must be \"a b\"");
      }
      a = s.substr(0, sp);
      size_t sp2 = s.find(' ', sp + 1);
      b = s.substr(sp + 1, sp2 == std::string::npos ? std::string::npos : sp2 - sp - 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return ctx.Error(absl::StrCat("model.merges[", i, "]"), "must be \"a b\" or [a, b]");
    }
    auto ia = impl->file_vocab.find(a);
    auto ib = impl->file_vocab.find(b);
    auto iab = impl->file_vocab.find(a + b);
    // HF rejects merges outside the vocabulary; transformers.js can never apply them to a
    // token it keeps. Skipping them is equivalent for every valid file.
    if (ia == impl->file_vocab.end() || ib == impl->file_vocab.end() ||
        iab == impl->file_vocab.end()) {
      continue;
    }
    // A later duplicate overrides the earlier one, as in both references.
    impl->merges[Impl::Key(ia->second, ib->second)] = {static_cast<int32_t>(i), iab->second};
  }

  auto unk_name = GetString(ctx, model, "unk_token", "model", "");
  if (!unk_name.ok()) return unk_name.status();
  if (!unk_name->empty()) {
    auto it = impl->file_vocab.find(*unk_name);
    if (it == impl->file_vocab.end()) {
      return ctx.Error("model.unk_token", absl::StrCat("\"", *unk_name, "\" is not in the vocabulary"));
    }
    impl->unk_id = it->second;
  }

  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer(std::move(impl)));
  Impl& im = *tok->impl_;
  for (auto [what, token, id] :
       {std::make_tuple("bos", names.bos, &im.bos), std::make_tuple("eos", names.eos, &im.eos),
        std::make_tuple("pad", names.pad, &im.pad)}) {
    absl::Status s = ResolveSpecial(*tok, what, token, id);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(file, ": ", s.message()));
  }
  if (im.pad < 0) im.pad = im.eos;
  for (int32_t id : {im.bos, im.eos, im.pad})
    if (id >= 0) im.special[id] = 1;
  return tok;
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromHfJsonFile(
    const std::string& path, const SpecialTokenNames& names, nlohmann::json spec) {
  auto j = ReadJsonFile(path);
  if (!j.ok()) return j.status();
  return FromHfJson(*j, path, names, std::move(spec));
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromGpt2Files(
    const std::string& vocab_path, const std::string& merges_path,
    const SpecialTokenNames& names, nlohmann::json spec) {
  auto vocab = ReadJsonFile(vocab_path);
  if (!vocab.ok()) return vocab.status();
  if (!vocab->is_object()) {
    return absl::InvalidArgumentError(vocab_path + ": must be a JSON object of token -> id");
  }
  auto merges_text = ReadFileToString(merges_path);
  if (!merges_text.ok()) return merges_text.status();
  json merges = json::array();
  std::istringstream in(*merges_text);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(merges_path, ": line ", line_no, ": expected \"a b\", got \"", line, "\""));
    }
    merges.push_back(json::array({line.substr(0, sp), line.substr(sp + 1)}));
  }
  // The same model as HF's tokenizer.json for GPT-2.
  json j = {
      {"model", {{"type", "BPE"}, {"vocab", std::move(*vocab)}, {"merges", std::move(merges)}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"added_tokens", json::array()}};
  SpecialTokenNames n = names;
  const std::string kEot = "<|endoftext|>";
  if (j["model"]["vocab"].contains(kEot)) {
    j["added_tokens"].push_back(
        {{"id", j["model"]["vocab"][kEot]}, {"content", kEot}, {"special", true}});
    if (n.bos.empty()) n.bos = kEot;
    if (n.eos.empty()) n.eos = kEot;
  }
  return FromHfJson(j, vocab_path + " + " + merges_path, n, std::move(spec));
}

std::vector<int32_t> BpeTokenizer::Encode(absl::string_view text) const {
  const Impl& im = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (im.matcher.empty()) {
    im.EncodeSection(std::string(text), 0, &ids);
    return ids;
  }
  // Split out added tokens first (leftmost-longest), then lstrip/rstrip neighbours.
  struct Section {
    std::string text;
    int added;  // index into im.added, or -1
  };
  std::vector<Section> sections;
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    auto [index, len] = im.matcher.MatchAt(text, i);
    if (index < 0) {
      ++i;
      continue;
    }
    if (i > start) sections.push_back({std::string(text.substr(start, i - start)), -1});
    sections.push_back({std::string(), index});
    i += len;
    start = i;
  }
  if (start < text.size()) sections.push_back({std::string(text.substr(start)), -1});
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].added < 0) continue;
    const AddedToken& a = im.added[sections[i].added];
    if (a.lstrip && i > 0 && sections[i - 1].added < 0) {
      sections[i - 1].text = StripWhitespace(sections[i - 1].text, false, true);
    }
    if (a.rstrip && i + 1 < sections.size() && sections[i + 1].added < 0) {
      sections[i + 1].text = StripWhitespace(sections[i + 1].text, true, false);
    }
  }
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].added >= 0) {
      ids.push_back(im.added[sections[i].added].id);
    } else if (!sections[i].text.empty()) {
      im.EncodeSection(std::move(sections[i].text), static_cast<int>(i), &ids);
    }
  }
  return ids;
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  return impl_->DecodeIds(ids, /*skip_special=*/true);
}
std::string BpeTokenizer::DecodeWithSpecial(const std::vector<int32_t>& ids) const {
  return impl_->DecodeIds(ids, /*skip_special=*/false);
}
int64_t BpeTokenizer::vocab_size() const {
  return static_cast<int64_t>(impl_->id_to_token.size());
}
int32_t BpeTokenizer::bos_id() const { return impl_->bos; }
int32_t BpeTokenizer::eos_id() const { return impl_->eos; }
int32_t BpeTokenizer::pad_id() const { return impl_->pad; }
std::string BpeTokenizer::name() const { return impl_->name; }
nlohmann::json BpeTokenizer::Spec() const { return impl_->spec; }
bool BpeTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(impl_->special.size()) && impl_->special[id];
}
int32_t BpeTokenizer::TokenToId(absl::string_view token) const {
  auto it = impl_->file_vocab.find(token);
  return it == impl_->file_vocab.end() ? -1 : it->second;
}

}  // namespace rlhf
