#include "core/tokenizer/sentencepiece_model.h"

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <functional>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "core/tokenizer/text_util.h"

namespace rlhf::spm {
namespace {

constexpr absl::string_view kSpaceSymbol = "\xe2\x96\x81";          // U+2581
constexpr absl::string_view kReplacementChar = "\xef\xbf\xbd";      // U+FFFD
constexpr absl::string_view kDefaultUnkSurface = " \xe2\x81\x87 ";  // " ⁇ "
// SentencePiece's cost of an unknown character below the lowest piece score (UNIGRAM).
constexpr float kUnkPenalty = 10.0f;

// ---------------------------------------------------------------------------------------
// Protobuf wire format (https://protobuf.dev/programming-guides/encoding/), read by hand:
// a message is a sequence of (tag = field << 3 | wire type, value). We read the fields of
// ModelProto we need and skip the others, as a protobuf parser keeps unknown fields.

enum WireType { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

struct Field {
  int number = 0;
  int wire_type = 0;
  uint64_t varint = 0;      // kVarint, kFixed64, kFixed32
  absl::string_view bytes;  // kLengthDelimited
  size_t offset = 0;        // of the tag, from the start of the file
  size_t value_offset = 0;  // of the value (for nested messages)
};

// Where we are, for error messages: "FILE: ... at byte N (ModelProto.pieces[3])".
struct Context {
  const std::string* file;
  std::string path;
};

absl::Status WireError(const Context& ctx, size_t offset, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(*ctx.file,
                                                 ": not a valid SentencePiece model: ", what,
                                                 " at byte ", offset, " (in ", ctx.path, ")"));
}

// Reads a varint at data[*pos]; false when truncated or longer than 10 bytes.
bool ReadVarint(absl::string_view data, size_t* pos, uint64_t* value) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (*pos >= data.size()) return false;
    const uint8_t b = static_cast<uint8_t>(data[(*pos)++]);
    if (shift < 64) v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *value = v;
      return true;
    }
  }
  return false;
}

// Calls fn for each field of the message `data` (which starts at byte `base` of the file).
absl::Status ForEachField(absl::string_view data, size_t base, const Context& ctx,
                          const std::function<absl::Status(const Field&)>& fn) {
  size_t pos = 0;
  while (pos < data.size()) {
    Field f;
    f.offset = base + pos;
    uint64_t tag = 0;
    if (!ReadVarint(data, &pos, &tag)) return WireError(ctx, f.offset, "truncated field tag");
    f.number = static_cast<int>(tag >> 3);
    f.wire_type = static_cast<int>(tag & 7);
    if (f.number == 0 || (tag >> 3) > 0x1fffffff) {
      return WireError(ctx, f.offset, absl::StrCat("invalid field number ", tag >> 3));
    }
    f.value_offset = base + pos;
    switch (f.wire_type) {
      case kVarint:
        if (!ReadVarint(data, &pos, &f.varint)) {
          return WireError(ctx, f.value_offset,
                           absl::StrCat("truncated varint of field ", f.number));
        }
        break;
      case kFixed64:
      case kFixed32: {
        const size_t n = f.wire_type == kFixed64 ? 8 : 4;
        if (data.size() - pos < n) {
          return WireError(ctx, f.value_offset,
                           absl::StrCat("truncated fixed", n * 8, " of field ", f.number));
        }
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i)
          v |= static_cast<uint64_t>(static_cast<uint8_t>(data[pos + i])) << (8 * i);
        f.varint = v;
        pos += n;
        break;
      }
      case kLengthDelimited: {
        uint64_t len = 0;
        if (!ReadVarint(data, &pos, &len)) {
          return WireError(ctx, f.value_offset,
                           absl::StrCat("truncated length of field ", f.number));
        }
        f.value_offset = base + pos;
        if (len > data.size() - pos) {
          return WireError(ctx, f.value_offset,
                           absl::StrCat("field ", f.number, " is ", len, " bytes but only ",
                                        data.size() - pos, " remain (truncated file?)"));
        }
        f.bytes = data.substr(pos, len);
        pos += len;
        break;
      }
      default:  // groups (3, 4) are not in sentencepiece_model.proto; 6, 7 do not exist
        return WireError(
            ctx, f.offset,
            absl::StrCat("unsupported wire type ", f.wire_type, " of field ", f.number));
    }
    absl::Status s = fn(f);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ExpectWireType(const Field& f, int wire_type, const Context& ctx,
                            absl::string_view name) {
  if (f.wire_type == wire_type) return absl::OkStatus();
  return WireError(ctx, f.offset,
                   absl::StrCat("field ", name, " (", f.number, ") has wire type ", f.wire_type,
                                ", expected ", wire_type));
}

absl::Status ReadBool(const Field& f, const Context& ctx, absl::string_view name, bool* out) {
  if (auto s = ExpectWireType(f, kVarint, ctx, name); !s.ok()) return s;
  *out = f.varint != 0;
  return absl::OkStatus();
}

absl::Status ReadInt32(const Field& f, const Context& ctx, absl::string_view name, int32_t* out) {
  if (auto s = ExpectWireType(f, kVarint, ctx, name); !s.ok()) return s;
  // Negative int32s are sign-extended to 64 bits on the wire; truncation undoes it.
  *out = static_cast<int32_t>(static_cast<uint32_t>(f.varint));
  return absl::OkStatus();
}

absl::Status ReadString(const Field& f, const Context& ctx, absl::string_view name,
                        std::string* out) {
  if (auto s = ExpectWireType(f, kLengthDelimited, ctx, name); !s.ok()) return s;
  out->assign(f.bytes.data(), f.bytes.size());
  return absl::OkStatus();
}

absl::Status ParsePiece(const Field& outer, const Context& ctx, Piece* piece) {
  return ForEachField(outer.bytes, outer.value_offset, ctx, [&](const Field& f) {
    switch (f.number) {
      case 1:
        return ReadString(f, ctx, "piece", &piece->piece);
      case 2: {
        if (auto s = ExpectWireType(f, kFixed32, ctx, "score"); !s.ok()) return s;
        const uint32_t bits = static_cast<uint32_t>(f.varint);
        std::memcpy(&piece->score, &bits, sizeof(float));
        return absl::OkStatus();
      }
      case 3: {
        int32_t type = 0;
        if (auto s = ReadInt32(f, ctx, "type", &type); !s.ok()) return s;
        if (type < 1 || type > 6) {
          return WireError(ctx, f.value_offset, absl::StrCat("unknown piece type ", type));
        }
        piece->type = static_cast<PieceType>(type);
        return absl::OkStatus();
      }
      default:
        return absl::OkStatus();
    }
  });
}

absl::Status ParseTrainerSpec(const Field& outer, const Context& ctx, TrainerSpec* spec) {
  return ForEachField(outer.bytes, outer.value_offset, ctx, [&](const Field& f) {
    switch (f.number) {
      case 3: {
        int32_t type = 0;
        if (auto s = ReadInt32(f, ctx, "model_type", &type); !s.ok()) return s;
        if (type < 1 || type > 4) {
          return WireError(ctx, f.value_offset,
                           absl::StrCat("unknown model_type ", type,
                                        " (known: 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR)"));
        }
        spec->model_type = static_cast<ModelType>(type);
        return absl::OkStatus();
      }
      case 4:
        return ReadInt32(f, ctx, "vocab_size", &spec->vocab_size);
      case 24:
        return ReadBool(f, ctx, "treat_whitespace_as_suffix", &spec->treat_whitespace_as_suffix);
      case 35:
        return ReadBool(f, ctx, "byte_fallback", &spec->byte_fallback);
      case 44: {
        std::string surface;
        if (auto s = ReadString(f, ctx, "unk_surface", &surface); !s.ok()) return s;
        spec->unk_surface = std::move(surface);
        return absl::OkStatus();
      }
      case 45:
        return ReadString(f, ctx, "unk_piece", &spec->unk_piece);
      case 46:
        return ReadString(f, ctx, "bos_piece", &spec->bos_piece);
      case 47:
        return ReadString(f, ctx, "eos_piece", &spec->eos_piece);
      case 48:
        return ReadString(f, ctx, "pad_piece", &spec->pad_piece);
      default:  // training-only options (unk_id..pad_id are read through their pieces)
        return absl::OkStatus();
    }
  });
}

absl::Status ParseNormalizerSpec(const Field& outer, const Context& ctx, NormalizerSpec* spec) {
  return ForEachField(outer.bytes, outer.value_offset, ctx, [&](const Field& f) {
    switch (f.number) {
      case 1:
        return ReadString(f, ctx, "name", &spec->name);
      case 2:
        return ReadString(f, ctx, "precompiled_charsmap", &spec->precompiled_charsmap);
      case 3:
        return ReadBool(f, ctx, "add_dummy_prefix", &spec->add_dummy_prefix);
      case 4:
        return ReadBool(f, ctx, "remove_extra_whitespaces", &spec->remove_extra_whitespaces);
      case 5:
        return ReadBool(f, ctx, "escape_whitespaces", &spec->escape_whitespaces);
      default:
        return absl::OkStatus();
    }
  });
}

// SentencePiece's util.h: the length of a UTF-8 character from its first byte only.
size_t OneCharLen(const char* src) {
  return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[(static_cast<uint8_t>(*src)) >> 4];
}

bool IsTrailByte(char x) { return static_cast<signed char>(x) < -0x40; }

bool IsValidCodepoint(uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

// SentencePiece's string_util::IsValidDecodeUTF8: *mblen is 1 for an invalid byte.
bool IsValidDecodeUtf8(absl::string_view in, size_t* mblen) {
  const uint8_t b0 = static_cast<uint8_t>(in[0]);
  const size_t len = in.size();
  *mblen = 1;
  if (b0 < 0x80) return true;
  if (len >= 2 && (b0 & 0xE0) == 0xC0) {
    const uint32_t cp = ((b0 & 0x1F) << 6) | (in[1] & 0x3F);
    if (IsTrailByte(in[1]) && cp >= 0x80 && IsValidCodepoint(cp)) {
      *mblen = 2;
      return true;
    }
  } else if (len >= 3 && (b0 & 0xF0) == 0xE0) {
    const uint32_t cp = ((b0 & 0x0F) << 12) | ((in[1] & 0x3F) << 6) | (in[2] & 0x3F);
    if (IsTrailByte(in[1]) && IsTrailByte(in[2]) && cp >= 0x800 && IsValidCodepoint(cp)) {
      *mblen = 3;
      return true;
    }
  } else if (len >= 4 && (b0 & 0xF8) == 0xF0) {
    const uint32_t cp =
        ((b0 & 0x07) << 18) | ((in[1] & 0x3F) << 12) | ((in[2] & 0x3F) << 6) | (in[3] & 0x3F);
    if (IsTrailByte(in[1]) && IsTrailByte(in[2]) && IsTrailByte(in[3]) && cp >= 0x10000 &&
        IsValidCodepoint(cp)) {
      *mblen = 4;
      return true;
    }
  }
  return false;
}

// "<0x41>" -> 0x41; -1 otherwise (upper-case hex, as SentencePiece writes them).
int PieceToByte(absl::string_view piece) {
  if (piece.size() != 6 || !absl::StartsWith(piece, "<0x") || piece[5] != '>') return -1;
  for (char c : piece.substr(3, 2))
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) return -1;
  return ParseHexByte(piece.substr(3, 2));
}

using EncodeResult = std::vector<std::pair<absl::string_view, int32_t>>;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

absl::StatusOr<ModelProto> ParseModelProto(absl::string_view bytes, const std::string& file) {
  ModelProto proto;
  Context top{&file, "ModelProto"};
  absl::Status s = ForEachField(bytes, 0, top, [&](const Field& f) -> absl::Status {
    switch (f.number) {
      case 1: {
        Context ctx{&file, absl::StrCat("ModelProto.pieces[", proto.pieces.size(), "]")};
        if (auto st = ExpectWireType(f, kLengthDelimited, top, "pieces"); !st.ok()) return st;
        proto.pieces.emplace_back();
        return ParsePiece(f, ctx, &proto.pieces.back());
      }
      case 2: {
        if (auto st = ExpectWireType(f, kLengthDelimited, top, "trainer_spec"); !st.ok()) return st;
        return ParseTrainerSpec(f, Context{&file, "ModelProto.trainer_spec"}, &proto.trainer_spec);
      }
      case 3: {
        if (auto st = ExpectWireType(f, kLengthDelimited, top, "normalizer_spec"); !st.ok())
          return st;
        return ParseNormalizerSpec(f, Context{&file, "ModelProto.normalizer_spec"},
                                   &proto.normalizer_spec);
      }
      case 5: {
        if (auto st = ExpectWireType(f, kLengthDelimited, top, "denormalizer_spec"); !st.ok())
          return st;
        if (!proto.denormalizer_spec) proto.denormalizer_spec.emplace();
        return ParseNormalizerSpec(f, Context{&file, "ModelProto.denormalizer_spec"},
                                   &*proto.denormalizer_spec);
      }
      default:  // self_test_data and extensions
        return absl::OkStatus();
    }
  });
  if (!s.ok()) return s;
  if (proto.pieces.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": not a valid SentencePiece model: no pieces (ModelProto.pieces is empty)"));
  }
  return proto;
}

// ---------------------------------------------------------------------------------------
// A byte trie over the pieces for UNIGRAM's lattice: one hash lookup per input byte.
struct Model::Trie {
  absl::flat_hash_map<uint64_t, int32_t> children;  // (node << 8 | byte) -> node
  std::vector<int32_t> value{-1};                   // node -> piece id, -1 if none

  void Insert(absl::string_view key, int32_t id) {
    int32_t node = 0;
    for (char c : key) {
      auto [it, inserted] =
          children.try_emplace((static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c),
                               static_cast<int32_t>(value.size()));
      if (inserted) value.push_back(-1);
      node = it->second;
    }
    value[node] = id;
  }
  // The child of `node` on byte c, or -1.
  int32_t Next(int32_t node, char c) const {
    auto it = children.find((static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c));
    return it == children.end() ? -1 : it->second;
  }
};

// ---------------------------------------------------------------------------------------
// The normalizer: SentencePiece's normalizer.cc. The precompiled charsmap is
// <uint32 trie size, little-endian><darts-clone double array><NUL-terminated outputs>;
// the longest key of the double array that prefixes the input maps to the output at the
// offset its value gives.
class Model::Normalizer {
 public:
  static absl::StatusOr<std::unique_ptr<Normalizer>> Create(const NormalizerSpec& spec,
                                                            bool treat_whitespace_as_suffix,
                                                            const Model* matcher,
                                                            const std::string& file,
                                                            absl::string_view field) {
    auto n = std::unique_ptr<Normalizer>(new Normalizer());
    n->spec_ = spec;
    n->suffix_ = treat_whitespace_as_suffix;
    n->matcher_ = matcher;
    const std::string& blob = spec.precompiled_charsmap;
    if (!blob.empty()) {
      uint32_t trie_size = 0;
      if (blob.size() > 4) {
        for (int i = 0; i < 4; ++i)
          trie_size |= static_cast<uint32_t>(static_cast<uint8_t>(blob[i])) << (8 * i);
      }
      if (blob.size() <= 4 || trie_size > blob.size() - 4) {
        return absl::InvalidArgumentError(absl::StrCat(
            file, ": ", field, ".precompiled_charsmap is broken (its trie size does not fit the ",
            blob.size(), "-byte blob)"));
      }
      n->units_.resize(trie_size / 4);
      std::memcpy(n->units_.data(), blob.data() + 4, n->units_.size() * 4);
      n->outputs_ = blob.substr(4 + trie_size);
    }
    return n;
  }

  std::string Normalize(absl::string_view input) const {
    std::string out;
    if (input.empty()) return out;
    if (spec_.remove_extra_whitespaces) {  // leading whitespace
      while (!input.empty()) {
        auto [normalized, consumed] = NormalizePrefix(input);
        if (normalized != " ") break;
        input.remove_prefix(consumed);
      }
    }
    if (input.empty()) return out;
    out.reserve(input.size() * 3);
    const absl::string_view space = spec_.escape_whitespaces ? kSpaceSymbol : " ";
    if (!suffix_ && spec_.add_dummy_prefix) out.append(space.data(), space.size());
    bool is_prev_space = spec_.remove_extra_whitespaces;
    while (!input.empty()) {
      auto [sp, consumed] = NormalizePrefix(input);
      // Collapses runs: drop the leading spaces of this output after a space.
      while (is_prev_space && absl::ConsumePrefix(&sp, " ")) {
      }
      if (!sp.empty()) {
        for (char c : sp) {
          if (spec_.escape_whitespaces && c == ' ') {
            out.append(kSpaceSymbol.data(), kSpaceSymbol.size());
          } else {
            out += c;
          }
        }
        is_prev_space = absl::EndsWith(sp, " ");
      }
      input.remove_prefix(consumed);
      if (!spec_.remove_extra_whitespaces) is_prev_space = false;
    }
    if (spec_.remove_extra_whitespaces) {  // trailing whitespace
      while (absl::EndsWith(out, space)) out.resize(out.size() - space.size());
    }
    if (suffix_ && spec_.add_dummy_prefix) out.append(space.data(), space.size());
    return out;
  }

 private:
  Normalizer() = default;

  // (normalized text of the longest rule or character at the start, bytes consumed).
  std::pair<absl::string_view, size_t> NormalizePrefix(absl::string_view input) const {
    if (matcher_ != nullptr) {  // user-defined symbols are never normalized
      bool found = false;
      const size_t len = matcher_->PrefixMatch(input, &found);
      if (found) return {input.substr(0, len), len};
    }
    size_t longest_length = 0;
    uint32_t longest_value = 0;
    if (!units_.empty()) CommonPrefixSearch(input, &longest_length, &longest_value);
    if (longest_length == 0) {
      size_t len = 0;
      // A malformed byte becomes U+FFFD and is consumed alone.
      if (!IsValidDecodeUtf8(input, &len)) return {kReplacementChar, 1};
      return {input.substr(0, len), len};
    }
    if (longest_value >= outputs_.size()) return {absl::string_view(), longest_length};
    absl::string_view rest = absl::string_view(outputs_).substr(longest_value);
    return {rest.substr(0, rest.find('\0')), longest_length};
  }

  // darts-clone's DoubleArray::commonPrefixSearch, keeping the longest match. Indices
  // outside the array (a corrupt blob) end the search.
  void CommonPrefixSearch(absl::string_view key, size_t* length, uint32_t* value) const {
    auto offset = [](uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); };
    auto label = [](uint32_t unit) { return unit & ((1u << 31) | 0xFF); };
    auto has_leaf = [](uint32_t unit) { return ((unit >> 8) & 1) == 1; };
    size_t node_pos = offset(units_[0]);
    for (size_t i = 0; i < key.size(); ++i) {
      const uint8_t c = static_cast<uint8_t>(key[i]);
      node_pos ^= c;
      if (node_pos >= units_.size()) return;
      const uint32_t unit = units_[node_pos];
      if (label(unit) != c) return;
      node_pos ^= offset(unit);
      if (node_pos >= units_.size()) return;
      if (has_leaf(unit)) {
        *length = i + 1;
        *value = units_[node_pos] & ((1u << 31) - 1);
      }
    }
  }

  NormalizerSpec spec_;
  bool suffix_ = false;
  const Model* matcher_ = nullptr;
  std::vector<uint32_t> units_;
  std::string outputs_;
};

// ---------------------------------------------------------------------------------------

Model::Model() = default;
Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path) {
  auto bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  auto proto = ParseModelProto(*bytes, path);
  if (!proto.ok()) return proto.status();
  return Create(*std::move(proto), path);
}

absl::StatusOr<std::unique_ptr<Model>> Model::Create(ModelProto proto, const std::string& file) {
  auto m = std::unique_ptr<Model>(new Model());
  m->proto_ = std::move(proto);
  const ModelProto& p = m->proto_;
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": not a valid SentencePiece model: ", what));
  };
  const bool byte_fallback = p.trainer_spec.byte_fallback;
  m->byte_of_id_.assign(p.pieces.size(), -1);
  m->byte_ids_.assign(256, -1);
  m->min_score_ = FLT_MAX;
  m->max_score_ = FLT_MIN;  // as SentencePiece: never below FLT_MIN (user-defined bonus)
  for (size_t i = 0; i < p.pieces.size(); ++i) {
    const Piece& sp = p.pieces[i];
    const int32_t id = static_cast<int32_t>(i);
    const std::string where = absl::StrCat("ModelProto.pieces[", i, "]");
    if (sp.piece.empty()) return error(absl::StrCat(where, ".piece is empty"));
    const bool normal = sp.type == PieceType::kNormal || sp.type == PieceType::kUserDefined ||
                        sp.type == PieceType::kUnused;
    if (!(normal ? m->pieces_ : m->reserved_).try_emplace(sp.piece, id).second) {
      return error(absl::StrCat(where, " \"", sp.piece, "\" is already defined"));
    }
    if (sp.type == PieceType::kNormal) {
      m->min_score_ = std::min(m->min_score_, sp.score);
      m->max_score_ = std::max(m->max_score_, sp.score);
    }
    if (sp.type == PieceType::kUserDefined) {
      m->user_defined_.emplace(sp.piece, id);
      m->user_defined_lengths_.push_back(sp.piece.size());
    }
    if (sp.type == PieceType::kUnknown) {
      if (m->unk_index_ >= 0) return error(absl::StrCat(where, ": a second UNKNOWN piece"));
      m->unk_index_ = id;
    }
    if (sp.type == PieceType::kByte) {
      if (!byte_fallback) {
        return error(absl::StrCat(where, " is a byte piece \"", sp.piece,
                                  "\" but trainer_spec.byte_fallback is false"));
      }
      const int b = PieceToByte(sp.piece);
      if (b < 0) return error(absl::StrCat(where, " \"", sp.piece, "\" is not a byte piece"));
      m->byte_of_id_[i] = static_cast<int16_t>(b);
      m->byte_ids_[b] = id;
    }
  }
  if (m->unk_index_ < 0) return error("no UNKNOWN piece (<unk>) is defined");
  if (byte_fallback && std::count(m->byte_ids_.begin(), m->byte_ids_.end(), -1) > 0) {
    return error("trainer_spec.byte_fallback is true but there are not 256 byte pieces");
  }
  std::sort(m->user_defined_lengths_.begin(), m->user_defined_lengths_.end(),
            std::greater<size_t>());
  m->user_defined_lengths_.erase(
      std::unique(m->user_defined_lengths_.begin(), m->user_defined_lengths_.end()),
      m->user_defined_lengths_.end());
  if (p.trainer_spec.model_type == ModelType::kUnigram) {
    m->trie_ = std::make_unique<Trie>();
    for (const auto& [piece, id] : m->pieces_) m->trie_->Insert(piece, id);
  }
  if (p.trainer_spec.model_type == ModelType::kBpe) {
    // Every split of every piece into two pieces: BPE's pair lookup by ids.
    for (const auto& [piece, id] : m->pieces_) {
      const absl::string_view whole = piece;
      for (size_t k = 1; k < whole.size(); ++k) {
        auto left = m->pieces_.find(whole.substr(0, k));
        if (left == m->pieces_.end()) continue;
        auto right = m->pieces_.find(whole.substr(k));
        if (right == m->pieces_.end()) continue;
        m->merges_[PairKey(left->second, right->second)] = id;
      }
    }
  }
  auto normalizer = Normalizer::Create(p.normalizer_spec, p.trainer_spec.treat_whitespace_as_suffix,
                                       m.get(), file, "normalizer_spec");
  if (!normalizer.ok()) return normalizer.status();
  m->normalizer_ = *std::move(normalizer);
  // SentencePiece only denormalizes with a non-empty rule set, without user symbols.
  if (p.denormalizer_spec && !p.denormalizer_spec->precompiled_charsmap.empty()) {
    auto denormalizer =
        Normalizer::Create(*p.denormalizer_spec, false, nullptr, file, "denormalizer_spec");
    if (!denormalizer.ok()) return denormalizer.status();
    m->denormalizer_ = *std::move(denormalizer);
  }
  // The special ids are those of the pieces the trainer spec names, as SentencePiece's
  // bos_id() etc.: the numeric *_id fields only place the pieces at training time.
  auto special = [&](const std::string& name, const char* fallback, PieceType type) {
    const int32_t id = m->PieceToId(name.empty() ? fallback : name);
    return m->proto_.pieces[id].type == type ? id : -1;
  };
  const TrainerSpec& t = p.trainer_spec;
  m->unk_id_ = special(t.unk_piece, "<unk>", PieceType::kUnknown);
  m->bos_id_ = special(t.bos_piece, "<s>", PieceType::kControl);
  m->eos_id_ = special(t.eos_piece, "</s>", PieceType::kControl);
  m->pad_id_ = special(t.pad_piece, "<pad>", PieceType::kControl);
  return m;
}

int32_t Model::PieceToId(absl::string_view piece) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
  if (auto it = pieces_.find(piece); it != pieces_.end()) return it->second;
  return unk_index_;
}

size_t Model::PrefixMatch(absl::string_view text, bool* found) const {
  for (size_t len : user_defined_lengths_) {
    if (len <= text.size() && user_defined_.contains(text.substr(0, len))) {
      *found = true;
      return len;
    }
  }
  *found = false;
  return std::min(text.size(), OneCharLen(text.data()));
}

std::string Model::Normalize(absl::string_view text) const { return normalizer_->Normalize(text); }

// SentencePiece's unigram::Model::EncodeOptimized: the best path ending at each byte
// position, extended by every piece (trie walk) and by <unk> for one character when no
// piece covers exactly that character. The float/double mix is SentencePiece's: a
// piece's candidate score is computed in double (the user-defined bonus is double) and
// stored as float, the unknown's in float; near-ties then break as they do there.
EncodeResult Model::EncodeUnigram(absl::string_view normalized) const {
  struct BestPathNode {
    int32_t id = -1;
    float best_path_score = 0;
    int64_t starts_at = -1;
  };
  const int64_t size = static_cast<int64_t>(normalized.size());
  const float unk_score = min_score_ - kUnkPenalty;
  std::vector<BestPathNode> best(size + 1);
  int64_t starts_at = 0;
  while (starts_at < size) {
    const float till_here = best[starts_at].best_path_score;
    bool has_single_node = false;
    const int64_t mblen =
        std::min<int64_t>(OneCharLen(normalized.data() + starts_at), size - starts_at);
    int32_t node = 0;
    for (int64_t key_pos = starts_at; key_pos < size;) {
      node = trie_->Next(node, normalized[key_pos]);
      ++key_pos;
      if (node < 0) break;
      const int32_t id = trie_->value[node];
      if (id < 0) continue;
      const Piece& piece = proto_.pieces[id];
      if (piece.type == PieceType::kUnused) continue;
      const int64_t length = key_pos - starts_at;
      const double score = piece.type == PieceType::kUserDefined
                               ? static_cast<double>(static_cast<float>(length) * max_score_) - 0.1
                               : static_cast<double>(piece.score);
      const double candidate = score + static_cast<double>(till_here);
      BestPathNode& target = best[key_pos];
      if (target.starts_at == -1 || candidate > static_cast<double>(target.best_path_score)) {
        target.best_path_score = static_cast<float>(candidate);
        target.starts_at = starts_at;
        target.id = id;
      }
      if (!has_single_node && length == mblen) has_single_node = true;
    }
    if (!has_single_node) {
      BestPathNode& target = best[starts_at + mblen];
      const float candidate = unk_score + till_here;
      if (target.starts_at == -1 || candidate > target.best_path_score) {
        target.best_path_score = candidate;
        target.starts_at = starts_at;
        target.id = unk_index_;
      }
    }
    starts_at += mblen;
  }
  EncodeResult out;
  for (int64_t ends_at = size; ends_at > 0;) {
    const BestPathNode& node = best[ends_at];
    out.emplace_back(normalized.substr(node.starts_at, ends_at - node.starts_at), node.id);
    ends_at = node.starts_at;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

// SentencePiece's bpe::Model::SampleEncode without dropout: characters (user-defined
// symbols whole and frozen), then repeatedly the adjacent pair whose concatenation is a
// piece with the highest score, leftmost on ties; UNUSED pieces are split back into the
// pair that formed them.
EncodeResult Model::EncodeBpe(absl::string_view normalized) const {
  struct SymbolPair {
    int left;
    int right;
    float score;
    size_t size;
    int32_t id;  // of the merged piece
  };
  struct Symbol {
    int prev;
    int next;
    bool freeze;
    int32_t id;  // in pieces_, or -1
    absl::string_view piece;
  };
  auto lower = [](const SymbolPair& a, const SymbolPair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<SymbolPair, std::vector<SymbolPair>, decltype(lower)> agenda(lower);
  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());
  absl::flat_hash_map<absl::string_view, std::pair<absl::string_view, absl::string_view>> rev_merge;
  auto maybe_add = [&](int left, int right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
    const absl::string_view piece(symbols[left].piece.data(),
                                  symbols[left].piece.size() + symbols[right].piece.size());
    int32_t merged = -1;
    if (symbols[left].id >= 0 && symbols[right].id >= 0) {
      // Both halves are pieces: the table of splits answers without hashing strings.
      auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
      if (it == merges_.end()) return;
      merged = it->second;
    } else {
      auto it = pieces_.find(piece);
      if (it == pieces_.end()) return;
      merged = it->second;
    }
    agenda.push(SymbolPair{left, right, proto_.pieces[merged].score, piece.size(), merged});
    if (proto_.pieces[merged].type == PieceType::kUnused) {
      rev_merge[piece] = {symbols[left].piece, symbols[right].piece};
    }
  };
  for (int index = 0; !normalized.empty(); ++index) {
    Symbol s;
    const size_t len = PrefixMatch(normalized, &s.freeze);
    s.piece = normalized.substr(0, len);
    s.id = -1;
    if (!s.freeze) {
      auto it = pieces_.find(s.piece);
      if (it != pieces_.end()) s.id = it->second;
    }
    s.prev = index - 1;
    normalized.remove_prefix(len);
    s.next = normalized.empty() ? -1 : index + 1;
    symbols.push_back(s);
  }
  if (symbols.empty()) return {};
  for (int i = 1; i < static_cast<int>(symbols.size()); ++i) maybe_add(i - 1, i);
  while (!agenda.empty()) {
    const SymbolPair top = agenda.top();
    agenda.pop();
    Symbol& l = symbols[top.left];
    Symbol& r = symbols[top.right];
    // Stale: one side was merged away or grew since the pair was queued.
    if (l.piece.empty() || r.piece.empty() || l.piece.size() + r.piece.size() != top.size) {
      continue;
    }
    l.piece = absl::string_view(l.piece.data(), l.piece.size() + r.piece.size());
    l.id = top.id;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = top.left;
    r.piece = absl::string_view();
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }
  EncodeResult out;
  std::function<void(absl::string_view)> resegment = [&](absl::string_view w) {
    const int32_t id = PieceToId(w);
    if (id == -1 || proto_.pieces[id].type != PieceType::kUnused) {
      out.emplace_back(w, id);
      return;
    }
    auto it = rev_merge.find(w);
    if (it == rev_merge.end()) {
      out.emplace_back(w, id);
      return;
    }
    const auto halves = it->second;
    resegment(halves.first);
    resegment(halves.second);
  };
  for (int index = 0; index != -1; index = symbols[index].next) resegment(symbols[index].piece);
  return out;
}

// SentencePiece's SplitIntoWords (whitespace as prefix, no whitespace-only pieces): a
// word starts at the beginning and at each "▁".
EncodeResult Model::EncodeWord(absl::string_view normalized) const {
  EncodeResult out;
  const char* begin = normalized.data();
  const char* end = begin + normalized.size();
  std::vector<absl::string_view> words;
  bool in_ws_sequence = false;
  while (begin < end) {
    const size_t mblen = std::min<size_t>(OneCharLen(begin), end - begin);
    const bool is_ws = absl::string_view(begin, mblen) == kSpaceSymbol;
    if (begin == normalized.data() || is_ws) {
      words.emplace_back(begin, 0);
      in_ws_sequence = true;
    }
    if (in_ws_sequence && !is_ws) in_ws_sequence = false;
    words.back() = absl::string_view(words.back().data(), words.back().size() + mblen);
    begin += mblen;
  }
  for (absl::string_view w : words) out.emplace_back(w, PieceToId(w));
  return out;
}

EncodeResult Model::EncodeChar(absl::string_view normalized) const {
  EncodeResult out;
  while (!normalized.empty()) {
    bool found = false;
    const size_t len = PrefixMatch(normalized, &found);
    out.emplace_back(normalized.substr(0, len), PieceToId(normalized.substr(0, len)));
    normalized.remove_prefix(len);
  }
  return out;
}

std::vector<int32_t> Model::Encode(absl::string_view text) const {
  const std::string normalized = normalizer_->Normalize(text);
  if (normalized.empty()) return {};
  EncodeResult pieces;
  switch (proto_.trainer_spec.model_type) {
    case ModelType::kUnigram:
      pieces = EncodeUnigram(normalized);
      break;
    case ModelType::kBpe:
      pieces = EncodeBpe(normalized);
      break;
    case ModelType::kWord:
      pieces = EncodeWord(normalized);
      break;
    case ModelType::kChar:
      pieces = EncodeChar(normalized);
      break;
  }
  // SentencePieceProcessor::PopulateSentencePieceText: a run of unknown pieces is one
  // <unk>; with byte_fallback each unknown piece becomes its UTF-8 bytes instead.
  std::vector<int32_t> ids;
  ids.reserve(pieces.size());
  bool prev_unk = false;
  for (const auto& [w, id] : pieces) {
    const bool is_unk = proto_.pieces[id].type == PieceType::kUnknown;
    if (is_unk && proto_.trainer_spec.byte_fallback) {
      for (char c : w) ids.push_back(byte_ids_[static_cast<uint8_t>(c)]);
    } else if (!(is_unk && prev_unk)) {
      ids.push_back(id);
    }
    prev_unk = is_unk;
  }
  return ids;
}

// SentencePieceProcessor::Decode: pieces joined with "▁" -> " "; while nothing has been
// written, a piece's leading "▁" is dropped (the dummy prefix; with
// remove_extra_whitespaces, every leading one); runs of byte pieces are decoded as UTF-8
// with U+FFFD for each invalid byte.
std::string Model::Decode(const std::vector<int32_t>& ids, bool render_control) const {
  const NormalizerSpec& ns = proto_.normalizer_spec;
  std::string text;
  std::string bytes;
  auto flush_bytes = [&]() {
    absl::string_view rest = bytes;
    while (!rest.empty()) {
      size_t len = 0;
      if (IsValidDecodeUtf8(rest, &len)) {
        text.append(rest.data(), len);
      } else {
        text.append(kReplacementChar.data(), kReplacementChar.size());
      }
      rest.remove_prefix(len);
    }
    bytes.clear();
  };
  bool is_bos_ws = true;
  bool bos_ws_seen = false;
  for (int32_t id : ids) {
    if (id < 0 || id >= size()) continue;
    if (byte_of_id_[id] >= 0) {
      bytes += static_cast<char>(byte_of_id_[id]);
      continue;
    }
    flush_bytes();
    if (bos_ws_seen || !text.empty()) is_bos_ws = false;
    const Piece& p = proto_.pieces[id];
    bos_ws_seen = false;
    if (p.type == PieceType::kControl) {
      if (render_control) text += p.piece;
    } else if (p.type == PieceType::kUnknown) {
      const absl::string_view surface =
          proto_.trainer_spec.unk_surface ? *proto_.trainer_spec.unk_surface : kDefaultUnkSurface;
      text.append(surface.data(), surface.size());
    } else {
      absl::string_view piece = p.piece;
      if (is_bos_ws && (ns.add_dummy_prefix || ns.remove_extra_whitespaces)) {
        bos_ws_seen = absl::ConsumePrefix(&piece, kSpaceSymbol);
        if (ns.remove_extra_whitespaces) bos_ws_seen = false;
      }
      text += absl::StrReplaceAll(piece, {{kSpaceSymbol, " "}});
    }
  }
  flush_bytes();
  if (denormalizer_ != nullptr) return denormalizer_->Normalize(text);
  return text;
}

}  // namespace rlhf::spm
