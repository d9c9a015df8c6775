// Randomized test of the safetensors parser: 10^5 mutated files (byte flips, truncation,
// header-length edits, JSON-level edits of dtype/shape/offsets) never crash the parser
// (run it under ASan/UBSan to catch out-of-bounds reads); every input is either rejected
// with a message or parses to tensors whose byte ranges lie inside the file.
#include <cstdint>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "core/model/checkpoint.h"

namespace rlhf {
namespace {

std::string Frame(const std::string& json, const std::string& data) {
  std::string out;
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + json + data;
}

std::string DataOf(const std::string& file) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(file[i])) << (8 * i);
  return file.substr(8 + n);
}

TEST(SafetensorsFuzzTest, HundredThousandMutatedInputsNeverCrash) {
  const NamedTensors seed_tensors = {{"a", torch::arange(6, torch::kFloat32).view({2, 3})},
                                     {"b.bias", torch::ones({4}, torch::kFloat16)},
                                     {"c", torch::zeros({0, 3}, torch::kBFloat16)},
                                     {"d", torch::arange(3, torch::kInt64)}};
  auto seed = SerializeSafetensors(seed_tensors, {{"format", "pt"}});
  ASSERT_TRUE(seed.ok());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>((*seed)[i])) << (8 * i);
  const nlohmann::json header = nlohmann::json::parse(seed->substr(8, n));
  const std::string data = DataOf(*seed);

  std::mt19937_64 rng(12345);
  auto pick = [&](uint64_t k) { return static_cast<uint64_t>(rng() % k); };
  const char* dtypes[] = {"F32", "F16", "BF16", "I64", "I32", "F64", "U8", "", "f32"};
  const char* names[] = {"a", "b.bias", "c", "d"};
  int ok = 0, rejected = 0;
  constexpr int kInputs = 100000;
  for (int iter = 0; iter < kInputs; ++iter) {
    std::string input;
    switch (pick(6)) {
      case 0: {  // random byte flips anywhere
        input = *seed;
        for (uint64_t k = 0, m = 1 + pick(8); k < m; ++k) input[pick(input.size())] = static_cast<char>(rng());
        break;
      }
      case 1:  // truncation
        input = seed->substr(0, pick(seed->size() + 1));
        break;
      case 2: {  // header length field edits
        input = *seed;
        const uint64_t v = pick(4) == 0 ? rng() : n + pick(64) - 32;
        for (int i = 0; i < 8; ++i) input[i] = static_cast<char>((v >> (8 * i)) & 0xff);
        break;
      }
      case 3: {  // offsets
        nlohmann::json h = header;
        auto& e = h[names[pick(4)]]["data_offsets"];
        e[pick(2)] = pick(3) == 0 ? rng() : pick(data.size() + 16);
        input = Frame(h.dump(), data);
        break;
      }
      case 4: {  // shapes and dtypes
        nlohmann::json h = header;
        auto& e = h[names[pick(4)]];
        if (pick(2) == 0) {
          e["dtype"] = dtypes[pick(9)];
        } else {
          nlohmann::json shape = nlohmann::json::array();
          for (uint64_t k = 0, m = pick(5); k < m; ++k) {
            shape.push_back(pick(4) == 0 ? nlohmann::json(rng()) : nlohmann::json(pick(8)));
          }
          if (pick(10) == 0) shape.push_back(-1);
          e["shape"] = shape;
        }
        input = Frame(h.dump(), data.substr(0, data.size() - pick(3)));
        break;
      }
      default: {  // random bytes after a plausible length
        const uint64_t len = pick(64);
        input = Frame(std::string(len, ' '), "");
        for (uint64_t k = 8; k < input.size(); ++k) input[k] = "{}[]\":,0123456789aFI"[pick(20)];
        break;
      }
    }
    auto parsed = ParseSafetensors(input);
    if (!parsed.ok()) {
      ++rejected;
      EXPECT_FALSE(parsed.status().message().empty());
      continue;
    }
    ++ok;
    uint64_t bytes = 0;
    for (const auto& [name, t] : parsed->tensors) bytes += static_cast<uint64_t>(t.numel()) * t.element_size();
    EXPECT_LE(bytes, input.size());
  }
  EXPECT_EQ(ok + rejected, kInputs);
  EXPECT_GT(rejected, kInputs / 2);  // the mutations mostly break the file...
  EXPECT_GT(ok, 100);                // ...but not always
}

}  // namespace
}  // namespace rlhf
