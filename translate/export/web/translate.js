// Translation inside the browser, over a folder written by translate/export/web.py: the
// pieces from SentencePiece's own C++ in WebAssembly, the encoder and decoder-step graphs (int8,
// or fp32) run by ONNX Runtime Web, and greedy and beam search by the rules of translate/search.py
// (written out in translate/export/manifest.py), one sentence at a time.
import * as ort from "./ort/ort.wasm.bundle.min.js";

const f32 = Math.fround; // the searches in Python add and divide float32 numbers

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return response;
}

async function fetchBytes(url) {
  return new Uint8Array(await (await fetchOk(url)).arrayBuffer());
}

// --- SentencePiece ---------------------------------------------------------------------------

let processorClass = null; // the package's SentencePieceProcessor, loaded once
const modelFiles = new Map(); // what the package reads with require("fs").readFileSync

// The npm package is CommonJS written for Node.js (its wasm inlined): run it with the two
// modules it asks for, "fs" to hand it the model's bytes and "url" for its own address.
async function sentencePieceProcessor() {
  if (processorClass === null) {
    const url = new URL("sentencepiece/sentencepiece.js", import.meta.url);
    const source = await (await fetchOk(url)).text();
    const modules = {
      fs: { readFileSync: (name) => modelFiles.get(name) },
      url: { URL },
    };
    const module = { exports: {} };
    const require = (name) => {
      if (!(name in modules)) throw new Error(`sentencepiece.js asks for ${name}`);
      return modules[name];
    };
    new Function("exports", "require", "module", "__filename", "__dirname", source)(
      module.exports, require, module, url.pathname, new URL(".", url).pathname,
    );
    processorClass = module.exports.SentencePieceProcessor;
  }
  return processorClass;
}

export class Tokenizer {
  // A SentencePiece model: text to ids and pieces, ids to text, as SentencePiece does them.
  constructor(processor) {
    this.processor = processor;
  }

  encode(line) {
    return this.processor.encodeIds(line);
  }

  pieces(line) {
    return this.processor.encodePieces(line);
  }

  decode(ids) {
    return this.processor.decodeIds(ids);
  }
}

export async function loadTokenizer(url) {
  const [Processor, bytes] = await Promise.all([sentencePieceProcessor(), fetchBytes(url)]);
  const key = String(url);
  modelFiles.set(key, bytes);
  const processor = new Processor();
  try {
    await processor.load(key);
  } finally {
    modelFiles.delete(key);
  }
  const status = processor.processor.status();
  const problem = status.ToString();
  status.delete();
  if (problem !== "OK") throw new Error(`${url} is not a SentencePiece model: ${problem}`);
  return new Tokenizer(processor);
}

// --- the rules of every search (translate/search.py) ------------------------------------------

// GNMT length penalty ((5 + length) / 6) ** alpha, length counting the EOS; scores are
// divided by it.
export function lengthPenalty(length, alpha) {
  return f32(f32(f32(5 + length) / 6) ** alpha);
}

// Maximum output length (EOS included): a * source length (EOS included) + b, at least 1.
export function maxLength(sourceLength, a, b) {
  return Math.max(1, Math.floor(f32(f32(f32(a) * sourceLength) + b)));
}

// The rules of every step, in place on one row's log-probabilities: PAD is never chosen; a
// row at its last allowed position can only end (EOS keeps its log-probability); a finished
// row goes on with PAD at no cost.
function maskStep(logProbs, atLimit, finished, ids) {
  logProbs[ids.pad] = -Infinity;
  if (atLimit) {
    const eos = logProbs[ids.eos];
    logProbs.fill(-Infinity);
    logProbs[ids.eos] = eos;
  }
  if (finished) {
    logProbs.fill(-Infinity);
    logProbs[ids.pad] = 0;
  }
}

// A line that Python's str.strip() empties (its whitespace, not JavaScript's: \x1c-\x1f and
// \x85 are, U+FEFF is not), which the engine leaves blank.
const BLANK = /^[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;

// Ids up to (not including) the first EOS or PAD.
function strip(tokens, ids) {
  const end = tokens.findIndex((t) => t === ids.eos || t === ids.pad);
  return end < 0 ? tokens : tokens.slice(0, end);
}

function int64(values, dims) {
  return new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

// --- the translator ----------------------------------------------------------------------------

export class Translator {
  // A page folder loaded once: its manifest, sessions of its graphs, its tokenizers.
  constructor(manifest, precision, encoder, step, source, target) {
    Object.assign(this, { manifest, precision, encoder, step, source, target });
    this.ids = manifest.special_ids;
    this.decode = manifest.decode;
  }

  // The n-best translations of one line: [{text, tokens, score, logProb}], best first, and
  // whether the line was cut to the model's longest source. A blank line gives blank ones.
  async translate(line, { beam = this.decode.beam, lengthPenalty: alpha, nBest = 1 } = {}) {
    alpha = alpha ?? this.decode.length_penalty;
    if (!Number.isInteger(beam) || beam < 1) throw new Error(`beam ${beam}: an integer >= 1`);
    if (!Number.isInteger(nBest) || nBest < 1 || nBest > beam) {
      throw new Error(`n-best ${nBest}: between 1 and the beam size (${beam})`);
    }
    if (BLANK.test(line)) {
      const blank = { text: "", tokens: [], score: 0, logProb: 0 };
      return { candidates: Array(nBest).fill(blank), truncated: false };
    }
    const pieces = this.source.encode(line);
    const limit = this.manifest.max_source_len;
    const truncated = pieces.length > limit;
    const srcTokens = [...pieces.slice(0, limit), this.ids.eos];
    const memory = await this.encoder.run({
      src_tokens: int64(srcTokens, [1, srcTokens.length]),
      src_lengths: int64([srcTokens.length], [1]),
    });
    const maxLen = maxLength(srcTokens.length, this.decode.max_len_a, this.decode.max_len_b);
    const hyps =
      beam === 1
        ? [await this.greedy(memory, maxLen, alpha)]
        : (await this.beamSearch(memory, maxLen, beam, alpha)).slice(0, nBest);
    const candidates = hyps.map((h) => ({
      ...h,
      text: this.target.decode(h.tokens.filter((t) => t > this.ids.eos)),
    }));
    return { candidates, truncated };
  }

  // One decoder step for `rows` rows of the sentence: its log-probabilities (rows x vocab)
  // and the new state.
  async runStep(memory, prevTokens, state) {
    const feeds = {};
    for (const input of this.manifest.step.inputs) {
      if (input.name === "prev_tokens") feeds.prev_tokens = int64(prevTokens, [prevTokens.length]);
      else if (input.name === "state") feeds[input.name] = state;
      else feeds[input.name] = memory[input.name]; // the encoder's, per sentence
    }
    const out = await this.step.run(feeds, ["log_probs", "new_state"]);
    return { logProbs: out.log_probs.data, state: out.new_state, vocab: out.log_probs.dims[1] };
  }

  // The most probable token at every step.
  async greedy(memory, maxLen, alpha) {
    let state = memory.state;
    let prev = this.ids.bos;
    let logProb = 0;
    const tokens = [];
    for (let t = 0; t < maxLen; t++) {
      const step = await this.runStep(memory, [prev], state);
      const logProbs = step.logProbs; // one row
      maskStep(logProbs, t + 1 >= maxLen, false, this.ids);
      let best = 0;
      for (let v = 1; v < step.vocab; v++) if (logProbs[v] > logProbs[best]) best = v;
      logProb = f32(logProb + logProbs[best]);
      tokens.push(best);
      prev = best;
      state = step.state;
      if (best === this.ids.eos) break;
    }
    const kept = strip(tokens, this.ids);
    const score = f32(logProb / lengthPenalty(kept.length + 1, alpha));
    return { tokens: kept, score, logProb };
  }

  // Beam search over k rows: every candidate ranked by its length-normalised score as if it
  // ended there; a finished row only emits PAD and keeps its score. Returns the k
  // hypotheses, best first.
  async beamSearch(memory, maxLen, k, alpha) {
    const ids = this.ids;
    const first = memory.state; // (1, state_rows, hidden)
    const rowSize = first.data.length;
    let state = new ort.Tensor("float32", new Float32Array(rowSize * k), [k, ...first.dims.slice(1)]);
    for (let r = 0; r < k; r++) state.data.set(first.data, r * rowSize);
    let beams = Array.from({ length: k }, (_, r) => ({
      tokens: [],
      logProb: r === 0 ? 0 : -Infinity, // step 0: one live beam
      score: -Infinity,
      finished: false,
      length: 0,
    }));
    for (let t = 0; t < maxLen; t++) {
      const prev = beams.map((b) => (b.tokens.length ? b.tokens[b.tokens.length - 1] : ids.bos));
      const step = await this.runStep(memory, prev, state);
      const V = step.vocab;
      // (k * V) normalised candidates; the k best, ties to the lower index
      const normalised = new Float64Array(k * V);
      const candidates = new Float32Array(k * V);
      beams.forEach((b, r) => {
        const row = step.logProbs.subarray(r * V, (r + 1) * V);
        maskStep(row, t + 1 >= maxLen && !b.finished, b.finished, ids);
        const penalty = lengthPenalty(b.length + 1, alpha);
        for (let v = 0; v < V; v++) {
          const c = f32(b.logProb + row[v]);
          candidates[r * V + v] = c;
          normalised[r * V + v] = f32(c / penalty);
        }
        if (b.finished) normalised[r * V + ids.pad] = b.score;
      });
      const top = topK(normalised, k);
      const rowOrder = top.map((i) => Math.floor(i / V));
      beams = top.map((i, j) => {
        const source = beams[rowOrder[j]];
        const token = i % V;
        return {
          tokens: [...source.tokens, token],
          logProb: candidates[i],
          score: token === ids.eos ? normalised[i] : source.score,
          finished: source.finished || token === ids.eos,
          length: source.length + (source.finished ? 0 : 1),
        };
      });
      const reordered = new Float32Array(rowSize * k);
      rowOrder.forEach((r, j) => {
        reordered.set(step.state.data.subarray(r * rowSize, (r + 1) * rowSize), j * rowSize);
      });
      state = new ort.Tensor("float32", reordered, step.state.dims);
      if (beams.every((b) => b.finished)) break;
    }
    const order = beams.map((_, r) => r).sort((a, b) => beams[b].score - beams[a].score || a - b);
    return order.map((r) => ({
      tokens: strip(beams[r].tokens, ids),
      score: beams[r].score,
      logProb: beams[r].logProb,
    }));
  }
}

// The indices of the k largest values, largest first, ties to the lower index.
function topK(values, k) {
  const best = []; // kept sorted: largest first
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (best.length === k && !(v > values[best[k - 1]])) continue;
    let at = best.length === k ? k - 1 : best.length;
    while (at > 0 && v > values[best[at - 1]]) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}

// The translator of the folder at `base` (the page's own by default); timings in ms.
export async function loadTranslator(base = new URL(".", import.meta.url)) {
  const manifest = await (await fetchOk(new URL("manifest.json", base))).json();
  ort.env.wasm.numThreads = 1; // a static page is not cross-origin isolated: no threads
  const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  const [precision, graphs] = Object.entries(manifest.graphs)[0]; // the folder has one
  const session = async (name) => ort.InferenceSession.create(
    await fetchBytes(new URL(graphs[name], base)), options,
  );
  const encoder = await session("encoder");
  const step = await session("step");
  const { src_spm: srcSpm, tgt_spm: tgtSpm } = manifest.vocab;
  const source = await loadTokenizer(new URL(srcSpm, base));
  const target = srcSpm === tgtSpm ? source : await loadTokenizer(new URL(tgtSpm, base));
  return new Translator(manifest, precision, encoder, step, source, target);
}
