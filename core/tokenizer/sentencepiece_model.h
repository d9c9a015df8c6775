// SentencePiece `.model` files read and run by our own code, exact to the id against
// SentencePiece 0.1.97 (Debian's `spm_encode` / `spm_decode`), with no link to
// libsentencepiece or libprotobuf (Debian's libsentencepiece bundles protobuf-lite 3.14
// and Abseil, which clash with LibTorch's and gRPC's copies in one process).
//
//  - ParseModelProto: a hand-written protobuf wire-format reader for the fields of
//    `ModelProto` (sentencepiece_model.proto) that encoding and decoding use; other
//    fields are skipped. Malformed or truncated input is InvalidArgument naming the
//    file, the field path and the byte offset.
//  - Model: the normalizer (the precompiled charsmap, i.e. the double-array trie that
//    `spm_train`'s rules such as the default `nmt_nfkc` compile to, read as written;
//    add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces, whitespace as
//    suffix; user-defined symbols pass through unnormalized) and the four model types:
//    UNIGRAM (Viterbi over piece scores, SentencePiece's optimized encoder), BPE (merge
//    the adjacent pair whose merged piece scores highest, leftmost on ties; UNUSED pieces
//    re-split), WORD and CHAR. Unknown characters become one <unk> per run, or their
//    UTF-8 bytes as <0xNN> pieces with byte_fallback. CONTROL pieces are never produced.
//    Decode joins pieces, turns "▁" into " ", drops the leading space as
//    SentencePiece does and reassembles byte pieces into UTF-8 (U+FFFD per invalid byte).
//
// Thread-safety: a Model is immutable after Create(); every method is const and safe to
// call concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::spm {

// ModelProto.SentencePiece.Type (the proto's numbers).
enum class PieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// TrainerSpec.ModelType.
enum class ModelType : int32_t { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

struct Piece {
  std::string piece;
  float score = 0.0f;
  PieceType type = PieceType::kNormal;
};

// The TrainerSpec fields that matter after training; defaults are the proto's.
struct TrainerSpec {
  ModelType model_type = ModelType::kUnigram;
  int32_t vocab_size = 8000;
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  std::string unk_piece;  // empty = "<unk>" (as SentencePiece reads an empty field)
  std::string bos_piece;  // empty = "<s>"
  std::string eos_piece;  // empty = "</s>"
  std::string pad_piece;  // empty = "<pad>"
  std::optional<std::string> unk_surface;  // unset = " ⁇ "
};

struct NormalizerSpec {
  std::string name;
  std::string precompiled_charsmap;  // empty = identity (no rules)
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

struct ModelProto {
  std::vector<Piece> pieces;
  TrainerSpec trainer_spec;
  NormalizerSpec normalizer_spec;
  std::optional<NormalizerSpec> denormalizer_spec;
};

// Parses a serialized ModelProto. `file` names the source in errors.
absl::StatusOr<ModelProto> ParseModelProto(absl::string_view bytes, const std::string& file);

class Model {
 public:
  // Validates the pieces as SentencePiece does (non-empty, unique, exactly one UNKNOWN,
  // 256 byte pieces iff byte_fallback) and builds the tries. Errors name `file`.
  static absl::StatusOr<std::unique_ptr<Model>> Create(ModelProto proto, const std::string& file);
  // Reads and parses `path` first.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path);
  ~Model();

  // Text -> ids, as `spm_encode --output_format=id`. Any byte string is accepted
  // (invalid UTF-8 is read as U+FFFD per byte, as SentencePiece does).
  std::vector<int32_t> Encode(absl::string_view text) const;
  // Ids -> text, as `spm_decode --input_format=id`. CONTROL pieces decode to "" unless
  // `render_control`, which writes their piece text; ids outside [0, size()) are skipped.
  std::string Decode(const std::vector<int32_t>& ids, bool render_control = false) const;
  // The normalized text the encoder sees ("▁Hello▁world"), for tests and debugging.
  std::string Normalize(absl::string_view text) const;

  int32_t size() const { return static_cast<int32_t>(proto_.pieces.size()); }
  // Ids of the trainer spec's unk/bos/eos/pad pieces; -1 when the piece is missing or
  // not of the right type (UNKNOWN for unk, CONTROL for the others), as SentencePiece.
  int32_t unk_id() const { return unk_id_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  PieceType type(int32_t id) const { return proto_.pieces[id].type; }
  const std::string& piece(int32_t id) const { return proto_.pieces[id].piece; }
  // Piece -> id: CONTROL/UNKNOWN/BYTE pieces first, then the others; else unk.
  int32_t PieceToId(absl::string_view piece) const;
  const ModelProto& proto() const { return proto_; }

  class Normalizer;
  struct Trie;

 private:
  Model();
  std::vector<std::pair<absl::string_view, int32_t>> EncodeUnigram(
      absl::string_view normalized) const;
  std::vector<std::pair<absl::string_view, int32_t>> EncodeBpe(absl::string_view normalized) const;
  std::vector<std::pair<absl::string_view, int32_t>> EncodeWord(absl::string_view normalized) const;
  std::vector<std::pair<absl::string_view, int32_t>> EncodeChar(absl::string_view normalized) const;
  // Longest user-defined symbol at the start of `text` (*found) or one UTF-8 char.
  size_t PrefixMatch(absl::string_view text, bool* found) const;

  ModelProto proto_;
  // NORMAL, USER_DEFINED and UNUSED pieces; CONTROL, UNKNOWN and BYTE pieces.
  absl::flat_hash_map<std::string, int32_t> pieces_;
  absl::flat_hash_map<std::string, int32_t> reserved_;
  // User-defined symbols and their distinct lengths, longest first.
  absl::flat_hash_map<std::string, int32_t> user_defined_;
  std::vector<size_t> user_defined_lengths_;
  std::unique_ptr<Trie> trie_;  // pieces_ by bytes (UNIGRAM)
  // (left id << 32 | right id) -> id of the piece that is their concatenation (BPE).
  absl::flat_hash_map<uint64_t, int32_t> merges_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<Normalizer> denormalizer_;
  std::vector<int32_t> byte_ids_;    // byte -> id of <0xNN>, with byte_fallback
  std::vector<int16_t> byte_of_id_;  // id -> its byte for BYTE pieces, else -1
  float min_score_ = 0.0f;           // over NORMAL pieces (UNIGRAM's unk score)
  float max_score_ = 0.0f;           // over NORMAL pieces and FLT_MIN (user-defined bonus)
  int32_t unk_index_ = -1;           // the UNKNOWN piece, which encoders emit
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t pad_id_ = -1;
};

}  // namespace rlhf::spm
