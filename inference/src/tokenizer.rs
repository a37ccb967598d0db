//! Byte-level BPE ("gpt2" in GGUF's `tokenizer.ggml.model`), read from the model file's own
//! metadata, matching llama.cpp's tokenizer token for token.
//!
//! llama.cpp's pipeline, which this follows step by step:
//! 1. **Special tokens** (token types control, user-defined, unknown) are cut out of the text
//!    first, longest token text first, each at its every occurrence, when `parse_special` is set
//!    (user-defined tokens always are). What lies between them is raw text.
//! 2. **Pre-tokenizer**: the raw text is split by the regexes that `tokenizer.ggml.pre` names,
//!    one after the other: each regex splits every piece that the previous one produced, and the
//!    text between matches stays a piece of its own.
//! 3. Every piece's UTF-8 bytes are mapped to printable characters (GPT-2's byte<->unicode
//!    table) and merged by **BPE**: repeatedly the adjacent pair with the lowest merge rank,
//!    leftmost on ties.
//! 4. Each final symbol is looked up in the vocabulary.

use std::collections::{BinaryHeap, HashMap};

use crate::error::InferenceError;

/// A vocabulary larger than this is refused at load (the largest common vocabularies hold
/// about 260k tokens): the tables below are built in memory from it.
pub const VOCAB_TOKENS_MAX: usize = 1 << 20;
/// A token's text longer than this is refused at load.
pub const TOKEN_BYTES_MAX: usize = 1024;

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp numbers them.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
pub const TOKEN_TYPE_UNUSED: i32 = 5;
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// The regex sets of the pre-tokenizers we support, named by `tokenizer.ggml.pre`
/// (from llama.cpp's `llama-vocab.cpp`; llama.cpp runs the second one through a hand-written
/// matcher that behaves like this regex followed by `|\s+`, which changes nothing here because
/// text no alternative matches stays a piece of its own anyway).
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

fn pre_tokenizer_regexes(pre: &str) -> Option<Vec<&'static str>> {
    match pre {
        // SmolLM, CodeShell, EXAONE, Minerva: every digit is a piece of its own, then GPT-2's.
        "smollm" | "codeshell" | "exaone" | "minerva-7b" => Some(vec![r"\p{N}", GPT2_REGEX]),
        "gpt2" | "mpt" | "olmo" | "jais" | "trillion" => Some(vec![GPT2_REGEX]),
        _ => None,
    }
}

/// GPT-2's table from bytes to printable characters: the printable Latin-1 bytes map to
/// themselves, the others to U+0100 onwards in byte order.
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0u32..256 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            let c = next;
            next += 1;
            c
        };
        // Every value is below U+0200, a valid scalar value.
        table[b as usize] = char::from_u32(c).unwrap_or('\u{fffd}');
    }
    table
}

/// What the tokenizer reads from a GGUF file's metadata.
pub struct TokenizerSpec {
    pub model: String,
    pub pre: String,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

pub struct Tokenizer {
    tokens: Vec<String>,
    token_types: Vec<i32>,
    token_to_id: HashMap<String, u32>,
    /// `"left right"` (the GGUF merge line) -> rank. Token texts never hold a raw space (it is
    /// mapped to 'Ġ'), so the joined key is unambiguous.
    merge_ranks: HashMap<String, u32>,
    /// Control, user-defined and unknown tokens, longest text first (llama.cpp's order).
    specials: Vec<u32>,
    regexes: Vec<fancy_regex::Regex>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
    /// Tokens that end a generation: the EOS token and the end-of-turn tokens of chat models.
    end_of_generation: Vec<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("merges", &self.merge_ranks.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

impl Tokenizer {
    pub fn from_spec(spec: TokenizerSpec) -> Result<Tokenizer, InferenceError> {
        let bad = |why: String| InferenceError::Tokenizer(why);
        if spec.model != "gpt2" {
            return Err(InferenceError::Unsupported(format!(
                "tokenizer model {:?} (only \"gpt2\" byte-level BPE is supported)",
                spec.model
            )));
        }
        let patterns = pre_tokenizer_regexes(&spec.pre).ok_or_else(|| {
            InferenceError::Unsupported(format!("pre-tokenizer {:?}", spec.pre))
        })?;
        if spec.tokens.is_empty() || spec.tokens.len() > VOCAB_TOKENS_MAX {
            return Err(bad(format!("vocabulary of {} tokens", spec.tokens.len())));
        }
        if spec.token_types.len() != spec.tokens.len() {
            return Err(bad(format!(
                "{} token types for {} tokens",
                spec.token_types.len(),
                spec.tokens.len()
            )));
        }
        let vocab = spec.tokens.len() as u32;
        for (name, id) in [("bos", spec.bos_id), ("eos", spec.eos_id)] {
            if let Some(id) = id {
                if id >= vocab {
                    return Err(bad(format!("{name} token id {id} outside the vocabulary")));
                }
            }
        }
        let mut token_to_id = HashMap::with_capacity(spec.tokens.len());
        for (id, text) in spec.tokens.iter().enumerate() {
            if text.len() > TOKEN_BYTES_MAX {
                return Err(bad(format!("token {id} is {} bytes long", text.len())));
            }
            // Duplicates: llama.cpp's map keeps the last one; so does insert.
            token_to_id.insert(text.clone(), id as u32);
        }
        let mut merge_ranks = HashMap::with_capacity(spec.merges.len());
        for (rank, merge) in spec.merges.iter().enumerate() {
            // llama.cpp splits a merge line at its first space from the second byte on; the
            // key we look pairs up by is that same "left right" text.
            if !merge.bytes().skip(1).any(|b| b == b' ') {
                return Err(bad(format!("merge {rank} {merge:?} has no space")));
            }
            let key = merge.clone();
            merge_ranks.entry(key).or_insert(rank as u32);
        }
        let mut specials: Vec<u32> = (0..vocab)
            .filter(|&id| {
                matches!(
                    spec.token_types[id as usize],
                    TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN
                ) && !spec.tokens[id as usize].is_empty()
            })
            .collect();
        // Longest first, then by id (llama.cpp's sort is not stable; equal lengths never
        // overlap in practice).
        specials.sort_by_key(|&id| (std::cmp::Reverse(spec.tokens[id as usize].len()), id));
        let regexes = patterns
            .iter()
            .map(|p| fancy_regex::Regex::new(p).map_err(|e| bad(format!("regex {p}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let byte_to_char = byte_to_char_table();
        let char_to_byte = byte_to_char.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let mut end_of_generation: Vec<u32> = spec.eos_id.into_iter().collect();
        for text in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"] {
            if let Some(&id) = token_to_id.get(text) {
                if spec.token_types[id as usize] == TOKEN_TYPE_CONTROL && !end_of_generation.contains(&id) {
                    end_of_generation.push(id);
                }
            }
        }
        Ok(Tokenizer {
            tokens: spec.tokens,
            token_types: spec.token_types,
            token_to_id,
            merge_ranks,
            specials,
            regexes,
            byte_to_char,
            char_to_byte,
            bos_id: spec.bos_id,
            eos_id: spec.eos_id,
            add_bos: spec.add_bos,
            end_of_generation,
            chat_template: spec.chat_template,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
    /// Whether the model wants BOS in front of a prompt (`tokenizer.ggml.add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    /// The id of a token by its exact text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// Text to token ids, as llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `add_special` puts BOS in front where the model asks for it, `parse_special` turns the
    /// text of control tokens (`<|im_start|>`) into those tokens instead of spelling it out.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, InferenceError> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            if let Some(bos) = self.bos_id {
                out.push(bos);
            }
        }
        for fragment in self.split_specials(text, parse_special) {
            match fragment {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(raw) => self.encode_raw(raw, &mut out)?,
            }
        }
        Ok(out)
    }

    /// Step 1: cut the special tokens out of the text.
    fn split_specials<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let token_type = self.token_types[id as usize];
            if !parse_special && matches!(token_type, TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(fragments.len());
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Steps 2 to 4 for one fragment of raw text.
    fn encode_raw(&self, text: &str, out: &mut Vec<u32>) -> Result<(), InferenceError> {
        let mut pieces = vec![text];
        for regex in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut at = 0;
                for m in regex.find_iter(piece) {
                    let m = m.map_err(|e| InferenceError::Tokenizer(format!("pre-tokenizer: {e}")))?;
                    if m.start() > at {
                        next.push(&piece[at..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    at = m.end();
                }
                if at < piece.len() {
                    next.push(&piece[at..]);
                }
            }
            pieces = next;
        }
        let mut mapped = String::new();
        for piece in pieces {
            mapped.clear();
            mapped.extend(piece.bytes().map(|b| self.byte_to_char[b as usize]));
            self.bpe(&mapped, out);
        }
        Ok(())
    }

    /// Step 3 and 4: merge the characters of one mapped piece by rank (a linked list of
    /// symbols and a heap of candidate pairs: O(n log n) in the piece's length, which long
    /// whitespace runs make large).
    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        // Symbols as byte ranges of `word`; `len == 0` marks a symbol merged into its left.
        struct Symbol {
            start: usize,
            len: usize,
            prev: Option<usize>,
            next: Option<usize>,
        }
        let mut symbols: Vec<Symbol> = Vec::new();
        for (i, (start, c)) in word.char_indices().enumerate() {
            symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: None });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        // Min-heap on (rank, left index) through Reverse, as llama.cpp's comparator orders.
        let mut heap: BinaryHeap<std::cmp::Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
        let mut key = String::new();
        let mut push_pair = |symbols: &Vec<Symbol>, heap: &mut BinaryHeap<_>, left: usize, right: usize| {
            let (l, r) = (&symbols[left], &symbols[right]);
            key.clear();
            key.push_str(&word[l.start..l.start + l.len]);
            key.push(' ');
            key.push_str(&word[r.start..r.start + r.len]);
            if let Some(&rank) = self.merge_ranks.get(key.as_str()) {
                // The pair's total length identifies a stale entry after either side changed.
                heap.push(std::cmp::Reverse((rank, left, right, l.len + r.len)));
            }
        };
        for i in 1..symbols.len() {
            push_pair(&symbols, &mut heap, i - 1, i);
        }
        while let Some(std::cmp::Reverse((_, left, right, len))) = heap.pop() {
            let (l, r) = (&symbols[left], &symbols[right]);
            if l.len == 0 || r.len == 0 || l.next != Some(right) || l.len + r.len != len {
                continue; // outdated
            }
            let right_next = r.next;
            symbols[left].len += symbols[right].len;
            symbols[right].len = 0;
            symbols[left].next = right_next;
            if let Some(n) = right_next {
                symbols[n].prev = Some(left);
            }
            if let Some(p) = symbols[left].prev {
                push_pair(&symbols, &mut heap, p, left);
            }
            if let Some(n) = right_next {
                push_pair(&symbols, &mut heap, left, n);
            }
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let s = &symbols[i];
            let text = &word[s.start..s.start + s.len];
            match self.token_to_id.get(text) {
                Some(&id) => out.push(id),
                // Not in the vocabulary: llama.cpp falls back to the symbol's single bytes that
                // are tokens (never taken with a complete byte-level vocabulary).
                None => {
                    for c in text.chars() {
                        if let Some(&id) = self.token_to_id.get(c.encode_utf8(&mut [0; 4]) as &str) {
                            out.push(id);
                        }
                    }
                }
            }
            at = s.next;
        }
    }

    /// The bytes a token stands for. Control tokens are rendered as their text only when
    /// `special` is set (llama.cpp's `token_to_piece(special)`), otherwise as nothing.
    pub fn token_bytes(&self, id: u32, special: bool) -> Result<Vec<u8>, InferenceError> {
        let text = self
            .tokens
            .get(id as usize)
            .ok_or(InferenceError::TokenOutOfRange { id, vocab: self.tokens.len() })?;
        let token_type = self.token_types[id as usize];
        Ok(match token_type {
            TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => {
                if special {
                    text.as_bytes().to_vec()
                } else {
                    Vec::new()
                }
            }
            TOKEN_TYPE_USER_DEFINED => text.as_bytes().to_vec(),
            _ => {
                // Byte-level text back to bytes; a character outside the table (not produced
                // by a byte-level vocabulary) is kept as its own UTF-8.
                let mut bytes = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match self.char_to_byte.get(&c) {
                        Some(&b) => bytes.push(b),
                        None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                bytes
            }
        })
    }

    /// Token ids to text (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32], special: bool) -> Result<String, InferenceError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id, special)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let table = byte_to_char_table();
        let mut seen = std::collections::HashSet::new();
        for c in table {
            assert!(seen.insert(c));
        }
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
    }
}
