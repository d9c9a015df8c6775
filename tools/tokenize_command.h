// `rlhf tokenize --model DIR [--decode] [--special] [--field text]`: what a model sees.
// Encode (default): each stdin line is text, or a JSON object whose --field (default
// "text") holds the text, or a JSON string; prints one JSON array of ids per line.
// --decode: each line is a JSON array of ids (or an object with "ids"); prints one JSON
// string per line (special tokens skipped unless --special).
// The tokenizer's name, vocabulary size and BOS/EOS/PAD go to stderr first.
// A malformed line is an error naming its line number (exit 1).
#pragma once

#include <string>
#include <vector>

namespace rlhf::tools {
int RunTokenizeCommand(const std::vector<std::string>& args);
}  // namespace rlhf::tools
