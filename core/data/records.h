// Plain record types of the training data (one JSONL line each). Pure text: tokenizing
// and truncating to a context length happen in the trainers (core/train/), which know
// the tokenizer and the model's max_seq_len.
//
// JSONL schemas (one JSON object per line; unknown keys are ignored):
//   SFT / demonstration   {"prompt": str, "response": str}
//   ranked responses      {"prompt": str, "responses": [str, ...], "ranking": [int, ...]}
//   preference pair       {"prompt": str, "chosen": str, "rejected": str}
//   pretraining text      {"text": str}
//   prompt only (RL/eval) {"prompt": str}   (extra keys such as "id" are ignored)
//                         optional "reference": str, the reference answer the
//                         exact_match rule scorer compares a response with
// User formats read into the same records (jsonl.h): chat {"messages": [...]}, TRL
// preferences with message lists, Anthropic HH {"chosen","rejected"} transcripts.
//
// Ranking convention: ranking[i] is the RANK of responses[i], 0 = best. It must be a
// permutation of 0..K-1 (ties are not representable; break them when labelling).
// Example: responses [A, B, C], ranking [2, 0, 1] means B > C > A.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rlhf {

struct SftRecord {
  std::string prompt;
  std::string response;
};

struct RankedRecord {
  std::string prompt;
  std::vector<std::string> responses;  // K >= 2
  std::vector<int> ranking;            // ranking[i] = rank of responses[i], 0 = best
};

// A single preference: `chosen` is better than `rejected` for `prompt`.
struct PairRecord {
  std::string prompt;
  std::string chosen;
  std::string rejected;
};

struct TextRecord {
  std::string text;
};

struct PromptRecord {
  std::string prompt;
  std::string reference;  // "" = none
};

// One comparison inside a RankedRecord, by response index.
struct IndexPair {
  int winner = 0;
  int loser = 0;
};

// All C(K,2) comparisons of a ranked record, ordered by (i, j) with i < j over response
// indices (the seed's (A,B), (A,C), (A,D), (B,C), (B,D), (C,D) order), each oriented
// winner = the better-ranked one. Pairs of byte-identical responses are dropped: they
// carry no preference, and ranking one copy above the other would teach noise.
// Precondition: record.ranking is a permutation of 0..K-1 (ValidateRanking).
std::vector<IndexPair> ExpandPairs(const RankedRecord& record);

// Number of distinct-text pairs ExpandPairs would return, without building them.
int64_t CountPairs(const RankedRecord& record);

}  // namespace rlhf
