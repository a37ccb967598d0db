//! The llama architecture: weights as shipped in a GGUF file (quantized or not) and the forward
//! pass over them, on the CPU.
//!
//! The matrix products run through candle's quantized CPU kernels (`QuantizedType::matmul_t`:
//! the activations are quantized to the weight's dot-product type, Q8_0 or Q8_1, as llama.cpp
//! does, and the rows are split over candle's thread pool). Everything between the products
//! (RMS norm, RoPE, attention, SwiGLU) is small and runs here on plain slices: for a 135M model
//! a tensor framework's per-operation overhead (allocation, shape checks, dispatch) would cost
//! more than the arithmetic.
//!
//! Numerics follow llama.cpp's CPU backend where it is cheap to do so, because the reference
//! test compares greedy tokens: the KV cache holds f16-rounded values (llama.cpp's default F16
//! cache) and the query is rounded to f16 before the K.Q product; RoPE's angles are built by
//! the same repeated f32 multiplication; sums of squares are accumulated in f64.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QStorage, QuantizedType};
use candle_core::{CpuStorage, Device};

use crate::error::InferenceError;
use crate::kv_cache::{round_f16, KvCache};
use crate::ops;
use crate::quant::{self, QMatrix, QuantRows};

/// Bounds on the shapes we accept from a file, so that a hostile header cannot make us
/// allocate absurd amounts or overflow an index.
pub const LAYERS_MAX: usize = 256;
pub const EMBEDDING_MAX: usize = 65536;
pub const HEADS_MAX: usize = 1024;
pub const TENSOR_ELEMENTS_MAX: usize = 1 << 34;

/// The hyperparameters, from the `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyper {
    pub embedding: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub feed_forward: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    pub context_len: usize,
    pub vocab: usize,
}

impl Hyper {
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// A weight matrix `[n_out, n_in]` in its file type (F32, F16, Q4_0, Q4_1, Q8_0, ...).
pub struct Linear {
    weights: Weights,
    dtype: GgmlDType,
    n_out: usize,
    n_in: usize,
}

/// Q4_0, Q4_1 and Q8_0 run on our kernels with ggml's arithmetic (see `quant`); the other
/// types stay on candle's.
enum Weights {
    Ggml(QMatrix),
    Candle(Box<dyn QuantizedType>),
}

impl Linear {
    /// `out = x . W^T` for `m` rows of `x`.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        let mut scratch = QuantRows::default();
        self.forward_with(x, m, out, &mut scratch)
    }

    /// As `forward`, reusing `scratch` for the quantized activations.
    pub fn forward_with(&self, x: &[f32], m: usize, out: &mut Vec<f32>, scratch: &mut QuantRows) -> Result<(), InferenceError> {
        assert_eq!(x.len(), m * self.n_in);
        out.clear();
        out.resize(m * self.n_out, 0.0);
        match &self.weights {
            Weights::Ggml(w) => {
                quant::quantize_rows(x, m, self.n_in, quant::needs_sum(w.kind), scratch);
                w.matmul(scratch, out);
            }
            Weights::Candle(w) => w.matmul_t((m, self.n_in, self.n_out), x, out)?,
        }
        Ok(())
    }

    /// `out = x . W^T` from activations already quantized by a matrix with the same input
    /// width and dot type (see `same_activations`).
    fn forward_quantized(&self, a: &QuantRows, m: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        let Weights::Ggml(w) = &self.weights else {
            return Err(InferenceError::Compute("forward_quantized on a candle matrix".into()));
        };
        assert_eq!(a.rows, m);
        out.clear();
        out.resize(m * self.n_out, 0.0);
        w.matmul(a, out);
        Ok(())
    }

    /// `outs[i] = x . linears[i]^T` for matrices that quantize their input alike
    /// (`same_activations`): the activations are quantized once, and a single decoded row runs
    /// all the products in one parallel region.
    fn forward_many(linears: &[&Linear], x: &[f32], m: usize, outs: &mut [&mut Vec<f32>], scratch: &mut QuantRows) -> Result<(), InferenceError> {
        assert_eq!(linears.len(), outs.len());
        let first = linears[0];
        let shared = linears.iter().all(|l| same_activations(first, l));
        if !shared {
            for (l, out) in linears.iter().zip(outs.iter_mut()) {
                l.forward_with(x, m, out, scratch)?;
            }
            return Ok(());
        }
        let Weights::Ggml(w0) = &first.weights else { unreachable!("same_activations holds only for our kernels") };
        assert_eq!(x.len(), m * first.n_in);
        quant::quantize_rows(x, m, first.n_in, quant::needs_sum(w0.kind), scratch);
        for (l, out) in linears.iter().zip(outs.iter_mut()) {
            out.clear();
            out.resize(m * l.n_out, 0.0);
        }
        if m == 1 {
            let mats: Vec<&QMatrix> = linears.iter().map(|l| match &l.weights {
                Weights::Ggml(w) => w,
                Weights::Candle(_) => unreachable!("same_activations holds only for our kernels"),
            }).collect();
            let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            QMatrix::matvec_many(&mats, scratch, &mut slices);
        } else {
            for (l, out) in linears.iter().zip(outs.iter_mut()) {
                l.forward_quantized(scratch, m, out)?;
            }
        }
        Ok(())
    }

    /// A matrix from its bytes in the file's layout: our kernels for Q4_0, Q4_1 and Q8_0,
    /// candle's for the other supported types.
    pub fn from_bytes(name: &str, dtype: GgmlDType, n_out: usize, n_in: usize, data: &[u8]) -> Result<Linear, InferenceError> {
        let kind = match dtype {
            GgmlDType::Q4_0 => Some(quant::Kind::Q4_0),
            GgmlDType::Q4_1 => Some(quant::Kind::Q4_1),
            GgmlDType::Q8_0 => Some(quant::Kind::Q8_0),
            _ => None,
        };
        if let Some(kind) = kind {
            let weights = Weights::Ggml(QMatrix::new(kind, n_out, n_in, data)?);
            return Ok(Linear { weights, dtype, n_out, n_in });
        }
        let weights = match QStorage::from_data(Cow::Borrowed(data), &Device::Cpu, dtype)? {
            QStorage::Cpu(w) => Weights::Candle(w),
            _ => return Err(InferenceError::Compute("weights not on the CPU".into())),
        };
        if !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_0 | GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K)
        {
            return Err(InferenceError::Unsupported(format!("tensor {name} of type {dtype:?}")));
        }
        Ok(Linear { weights, dtype, n_out, n_in })
    }

    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }

    /// Row `id` of the matrix as f32 (the token embedding lookup).
    fn row(&self, id: u32, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        assert!((id as usize) < self.n_out);
        match &self.weights {
            Weights::Ggml(w) => {
                w.dequantize_row(id as usize, out);
                Ok(())
            }
            Weights::Candle(w) => match w.embedding(&[id], self.n_out, self.n_in)? {
                CpuStorage::F32(v) => {
                    out.extend_from_slice(&v);
                    Ok(())
                }
                _ => Err(InferenceError::Compute("embedding is not f32".into())),
            },
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Llama {
    pub hyper: Hyper,
    token_embedding: Linear,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `None`: tied to the token embedding (SmolLM2 ships no `output.weight`).
    output: Option<Linear>,
}

/// Metadata access with errors that name the key.
pub struct Meta<'c>(pub &'c HashMap<String, Value>);

impl Meta<'_> {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    pub fn string(&self, key: &str) -> Result<&str, InferenceError> {
        match self.0.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(InferenceError::Metadata(format!("{key} is not a string"))),
            None => Err(InferenceError::Metadata(format!("{key} is missing"))),
        }
    }
    pub fn opt_string(&self, key: &str) -> Option<String> {
        match self.0.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    }
    pub fn int(&self, key: &str) -> Result<u64, InferenceError> {
        let v = self.0.get(key).ok_or_else(|| InferenceError::Metadata(format!("{key} is missing")))?;
        value_u64(v).ok_or_else(|| InferenceError::Metadata(format!("{key} is not a non-negative integer")))
    }
    pub fn opt_int(&self, key: &str) -> Result<Option<u64>, InferenceError> {
        if self.0.contains_key(key) {
            self.int(key).map(Some)
        } else {
            Ok(None)
        }
    }
    pub fn float(&self, key: &str) -> Result<Option<f32>, InferenceError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::F32(f)) => Ok(Some(*f)),
            Some(Value::F64(f)) => Ok(Some(*f as f32)),
            Some(_) => Err(InferenceError::Metadata(format!("{key} is not a float"))),
        }
    }
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
}

pub fn value_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

pub fn value_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x as i64),
        Value::U16(x) => Some(x as i64),
        Value::U32(x) => Some(x as i64),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I8(x) => Some(x as i64),
        Value::I16(x) => Some(x as i64),
        Value::I32(x) => Some(x as i64),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

fn bounded(meta: &Meta, key: &str, min: u64, max: usize) -> Result<usize, InferenceError> {
    let v = meta.int(key)?;
    if v < min || v > max as u64 {
        return Err(InferenceError::Metadata(format!("{key} = {v} is outside [{min}, {max}]")));
    }
    Ok(v as usize)
}

impl Hyper {
    pub fn from_metadata(meta: &Meta, vocab: usize) -> Result<Hyper, InferenceError> {
        let embedding = bounded(meta, "llama.embedding_length", 1, EMBEDDING_MAX)?;
        let layers = bounded(meta, "llama.block_count", 1, LAYERS_MAX)?;
        let heads = bounded(meta, "llama.attention.head_count", 1, HEADS_MAX)?;
        let kv_heads = match meta.opt_int("llama.attention.head_count_kv")? {
            Some(_) => bounded(meta, "llama.attention.head_count_kv", 1, HEADS_MAX)?,
            None => heads,
        };
        let feed_forward = bounded(meta, "llama.feed_forward_length", 1, EMBEDDING_MAX * 16)?;
        let context_len = bounded(meta, "llama.context_length", 1, 1 << 24)?;
        if embedding % heads != 0 || heads % kv_heads != 0 {
            return Err(InferenceError::Metadata(format!(
                "{embedding} embedding, {heads} heads, {kv_heads} kv heads do not divide"
            )));
        }
        let head_dim = embedding / heads;
        let rope_dim = match meta.opt_int("llama.rope.dimension_count")? {
            Some(d) => d as usize,
            None => head_dim,
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 || head_dim % 2 != 0 {
            return Err(InferenceError::Metadata(format!("rope dimension {rope_dim} for head dimension {head_dim}")));
        }
        let rope_base = meta.float("llama.rope.freq_base")?.unwrap_or(10000.0);
        let rms_eps = meta.float("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5);
        if !(rope_base.is_finite() && rope_base > 0.0 && rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(InferenceError::Metadata(format!("rope base {rope_base}, rms eps {rms_eps}")));
        }
        if meta.get("llama.rope.scaling.type").is_some() || meta.get("llama.expert_count").is_some() {
            // Rope scaling and mixtures of experts change the forward pass: refuse rather than
            // compute something else.
            if let Some(v) = meta.get("llama.rope.scaling.type") {
                if !matches!(v, Value::String(s) if s == "none") {
                    return Err(InferenceError::Unsupported("rope scaling".into()));
                }
            }
            if meta.opt_int("llama.expert_count")?.unwrap_or(0) > 0 {
                return Err(InferenceError::Unsupported("mixture of experts".into()));
            }
        }
        Ok(Hyper {
            embedding,
            layers,
            heads,
            kv_heads,
            head_dim,
            rope_dim,
            feed_forward,
            rope_base,
            rms_eps,
            context_len,
            vocab,
        })
    }
}

/// Reads tensors by name from an open GGUF file, checking every size against the file.
pub struct TensorReader<'a, R> {
    pub reader: &'a mut R,
    pub content: &'a Content,
    pub file_len: u64,
}

impl<R: Read + Seek> TensorReader<'_, R> {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.content.tensor_infos.get(name)
    }

    fn raw(&mut self, name: &str, expected: &[usize]) -> Result<(GgmlDType, Vec<u64>, usize), InferenceError> {
        let bad = |why: String| InferenceError::Metadata(format!("tensor {name}: {why}"));
        let info = self.info(name).ok_or_else(|| bad("missing".into()))?;
        // GGUF lists dimensions innermost first; candle's shape is outermost first.
        let dims = info.shape.dims();
        if dims != expected {
            return Err(bad(format!("shape {dims:?}, expected {expected:?}")));
        }
        let dtype = info.ggml_dtype;
        let mut elements: usize = 1;
        for &d in dims {
            elements = elements.checked_mul(d).filter(|&e| e <= TENSOR_ELEMENTS_MAX).ok_or_else(|| bad("too large".into()))?;
        }
        let block = dtype.block_size();
        if dims.last().is_some_and(|&d| d % block != 0) {
            return Err(bad(format!("rows of {dims:?} are not whole {dtype:?} blocks")));
        }
        let bytes = elements / block * dtype.type_size();
        let start = self.content.tensor_data_offset.checked_add(info.offset).ok_or_else(|| bad("offset overflows".into()))?;
        let end = start.checked_add(bytes as u64).ok_or_else(|| bad("offset overflows".into()))?;
        if end > self.file_len {
            return Err(bad(format!("needs bytes {start}..{end}, the file has {}", self.file_len)));
        }
        // u64 words: the block types and f32 need their alignment when candle views the bytes.
        let mut words = vec![0u64; bytes.div_ceil(8)];
        let buf = &mut bytemuck_bytes(&mut words)[..bytes];
        self.reader.seek(SeekFrom::Start(start)).map_err(|e| bad(e.to_string()))?;
        self.reader.read_exact(buf).map_err(|e| bad(e.to_string()))?;
        Ok((dtype, words, bytes))
    }

    /// A matrix `[n_out, n_in]`.
    pub fn linear(&mut self, name: &str, n_out: usize, n_in: usize) -> Result<Linear, InferenceError> {
        let (dtype, words, bytes) = self.raw(name, &[n_out, n_in])?;
        let data = &bytemuck_bytes_ref(&words)[..bytes];
        Linear::from_bytes(name, dtype, n_out, n_in, data)
    }

    /// A vector of f32 (the norms).
    pub fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>, InferenceError> {
        let (dtype, words, bytes) = self.raw(name, &[n])?;
        let data = &bytemuck_bytes_ref(&words)[..bytes];
        match dtype {
            GgmlDType::F32 => Ok(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            GgmlDType::F16 => Ok(data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
            other => Err(InferenceError::Unsupported(format!("norm {name} of type {other:?}"))),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.info(name).is_some()
    }
}

fn bytemuck_bytes(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u8 has no alignment or validity requirements; the length is the same memory.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) }
}
fn bytemuck_bytes_ref(words: &[u64]) -> &[u8] {
    // SAFETY: as above.
    unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, words.len() * 8) }
}

impl Llama {
    pub fn load<R: Read + Seek>(tensors: &mut TensorReader<R>, hyper: Hyper) -> Result<Llama, InferenceError> {
        let h = &hyper;
        let token_embedding = tensors.linear("token_embd.weight", h.vocab, h.embedding)?;
        let mut layers = Vec::with_capacity(h.layers);
        for i in 0..h.layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: tensors.vector(&p("attn_norm"), h.embedding)?,
                q: tensors.linear(&p("attn_q"), h.heads * h.head_dim, h.embedding)?,
                k: tensors.linear(&p("attn_k"), h.kv_dim(), h.embedding)?,
                v: tensors.linear(&p("attn_v"), h.kv_dim(), h.embedding)?,
                o: tensors.linear(&p("attn_output"), h.embedding, h.heads * h.head_dim)?,
                ffn_norm: tensors.vector(&p("ffn_norm"), h.embedding)?,
                gate: tensors.linear(&p("ffn_gate"), h.feed_forward, h.embedding)?,
                up: tensors.linear(&p("ffn_up"), h.feed_forward, h.embedding)?,
                down: tensors.linear(&p("ffn_down"), h.embedding, h.feed_forward)?,
            });
        }
        let output_norm = tensors.vector("output_norm.weight", h.embedding)?;
        let output = if tensors.has("output.weight") {
            Some(tensors.linear("output.weight", h.vocab, h.embedding)?)
        } else {
            None
        };
        Ok(Llama { hyper, token_embedding, layers, output_norm, output })
    }

    /// The type of most weights, as "Q4_1" (the largest count among the layers' matrices).
    pub fn quantization(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for l in &self.layers {
            for m in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                let name = format!("{:?}", m.dtype());
                match counts.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((name, 1)),
                }
            }
        }
        counts.into_iter().max_by_key(|(_, c)| *c).map(|(n, _)| n).unwrap_or_default()
    }

    /// Runs `tokens` at positions `cache.len()..` and returns the logits of the last token
    /// (or of every token with `all_logits`). `trace`, when given, receives the hidden state
    /// after every layer (for tests).
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        mut trace: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Vec<f32>, InferenceError> {
        let h = &self.hyper;
        let m = tokens.len();
        assert!(m > 0);
        assert!(cache.len() + m <= cache.capacity_tokens());
        let start = cache.len();
        let (d, hd, kv_dim) = (h.embedding, h.head_dim, h.kv_dim());

        let mut x = Vec::with_capacity(m * d);
        for &t in tokens {
            if t as usize >= h.vocab {
                return Err(InferenceError::TokenOutOfRange { id: t, vocab: h.vocab });
            }
            self.token_embedding.row(t, &mut x)?;
        }
        let (mut xn, mut q, mut k, mut v, mut att, mut o) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut g, mut u) = (vec![], vec![]);
        let mut scratch = QuantRows::default();
        for (li, layer) in self.layers.iter().enumerate() {
            ops::rms_norm(&x, &layer.attn_norm, h.rms_eps, &mut xn);
            // q, k and v read the same activations: quantized once, one parallel region.
            Linear::forward_many(&[&layer.q, &layer.k, &layer.v], &xn, m, &mut [&mut q, &mut k, &mut v], &mut scratch)?;
            for t in 0..m {
                let pos = start + t;
                for head in q[t * h.heads * hd..(t + 1) * h.heads * hd].chunks_exact_mut(hd) {
                    rope(head, pos, h.rope_dim, h.rope_base);
                }
                for head in k[t * kv_dim..(t + 1) * kv_dim].chunks_exact_mut(hd) {
                    rope(head, pos, h.rope_dim, h.rope_base);
                }
            }
            cache.append(li, &k, &v);
            let (kc, vc) = cache.layer(li);
            attention(h, &q, kc, vc, start, m, &mut att);
            layer.o.forward_with(&att, m, &mut o, &mut scratch)?;
            add(&mut x, &o);
            ops::rms_norm(&x, &layer.ffn_norm, h.rms_eps, &mut xn);
            Linear::forward_many(&[&layer.gate, &layer.up], &xn, m, &mut [&mut g, &mut u], &mut scratch)?;
            ops::swiglu(&mut g, &u);
            layer.down.forward_with(&g, m, &mut o, &mut scratch)?;
            add(&mut x, &o);
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(x.clone());
            }
        }
        cache.commit(m);
        let rows = if all_logits { m } else { 1 };
        let last = &x[(m - rows) * d..];
        ops::rms_norm(last, &self.output_norm, h.rms_eps, &mut xn);
        let mut logits = Vec::new();
        self.output.as_ref().unwrap_or(&self.token_embedding).forward(&xn, rows, &mut logits)?;
        Ok(logits)
    }
}

/// Rotates adjacent pairs `(x[2i], x[2i+1])` by `pos * base^(-2i/dim)` (GGUF stores llama's
/// q and k permuted for this "normal" RoPE). The angle is advanced by repeated f32
/// multiplication, and each rotation is one fused multiply-add over a rounded product, as ggml's
/// C compiles (GCC contracts `x0*cos - x1*sin` into `fma(x0, cos, -(x1*sin))`): the plain form
/// differs in the last bit now and then, enough to part greedy tokens from llama.cpp's.
fn rope(x: &mut [f32], pos: usize, dim: usize, base: f32) {
    let theta_scale = base.powf(-2.0 / dim as f32);
    let mut theta = pos as f32;
    for pair in x[..dim].chunks_exact_mut(2) {
        let (sin, cos) = theta.sin_cos();
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a.mul_add(cos, -(b * sin));
        pair[1] = a.mul_add(sin, b * cos);
        theta *= theta_scale;
    }
}

/// Whether `b` can reuse the activations `a` quantized (same input width, same dot type).
fn same_activations(a: &Linear, b: &Linear) -> bool {
    match (&a.weights, &b.weights) {
        (Weights::Ggml(x), Weights::Ggml(y)) => x.n_in == y.n_in && quant::needs_sum(x.kind) == quant::needs_sum(y.kind),
        _ => false,
    }
}

/// Causal attention of `m` query rows at positions `start..start + m` over the f16-rounded
/// cache, as llama.cpp's CPU graph computes it without flash attention: q rounded to f16,
/// K.Q and softmax.V as F16 products (one query row: `ggml_vec_dot_f16`; several:
/// llamafile's tinyBLAS, which sums in a different lane order), the softmax weights rounded
/// to f16 before the V product, the 1/sqrt(head_dim) scale applied inside the softmax.
fn attention(h: &Hyper, q: &[f32], kc: &[f32], vc: &[f32], start: usize, m: usize, att: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    {
        /// The same code compiled with FMA instructions (`mul_add` is otherwise a libm call).
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fast(h: &Hyper, q: &[f32], kc: &[f32], vc: &[f32], start: usize, m: usize, att: &mut Vec<f32>) {
            attention_impl(h, q, kc, vc, start, m, att)
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features `fast` is compiled for.
            return unsafe { fast(h, q, kc, vc, start, m, att) };
        }
    }
    attention_impl(h, q, kc, vc, start, m, att)
}

#[inline(always)]
fn attention_impl(h: &Hyper, q: &[f32], kc: &[f32], vc: &[f32], start: usize, m: usize, att: &mut Vec<f32>) {
    let hd = h.head_dim;
    let group = h.heads / h.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let single = m == 1;
    att.clear();
    att.resize(m * h.heads * hd, 0.0);
    {
        let mut scores = Vec::new();
        let mut qh = vec![0f32; hd];
        let mut acc = vec![0f32; ops::F16_DOT_STEP * hd];
        for t in 0..m {
            let n = start + t + 1; // attends to positions 0..n (causal)
            for head in 0..h.heads {
                let kvh = head / group;
                for (a, &b) in qh.iter_mut().zip(&q[(t * h.heads + head) * hd..][..hd]) {
                    *a = round_f16(b);
                }
                scores.clear();
                for p in 0..n {
                    let kp = &kc[(p * h.kv_heads + kvh) * hd..][..hd];
                    scores.push(dot_f16(&qh, kp, single));
                }
                ops::softmax(&mut scores, scale);
                for s in scores.iter_mut() {
                    *s = round_f16(*s);
                }
                // out[d] = sum over p of w[p] * v[p][d], lane = p mod the kernel's step.
                let step = if single { ops::F16_DOT_STEP } else { 8 };
                let acc = &mut acc[..step * hd];
                acc.fill(0.0);
                for (p, &w) in scores.iter().enumerate() {
                    let vp = &vc[(p * h.kv_heads + kvh) * hd..][..hd];
                    let lane = &mut acc[(p % step) * hd..][..hd];
                    for (a, &vv) in lane.iter_mut().zip(vp) {
                        *a = vv.mul_add(w, *a);
                    }
                }
                let out = &mut att[(t * h.heads + head) * hd..][..hd];
                for (d, o) in out.iter_mut().enumerate() {
                    *o = if single {
                        let mut l = [0f32; ops::F16_DOT_STEP];
                        for (i, x) in l.iter_mut().enumerate() {
                            *x = acc[i * hd + d];
                        }
                        ops::dot_f16_vec(&l)
                    } else {
                        let mut l = [0f32; 8];
                        for (i, x) in l.iter_mut().enumerate() {
                            *x = acc[i * hd + d];
                        }
                        ops::dot_f16_tiny(&l)
                    };
                }
            }
        }
    }
}

/// The dot product of two rows of f16 values (held as f32) with the lane order of ggml's
/// `ggml_vec_dot_f16` (`single`) or llamafile's tinyBLAS; a tail shorter than a step is
/// summed in f64 as ggml does (none for head sizes that are multiples of 32).
#[inline(always)]
fn dot_f16(a: &[f32], b: &[f32], single: bool) -> f32 {
    if single {
        let mut acc = [0f32; ops::F16_DOT_STEP];
        let whole = a.len() / ops::F16_DOT_STEP * ops::F16_DOT_STEP;
        for (ca, cb) in a[..whole].chunks_exact(ops::F16_DOT_STEP).zip(b.chunks_exact(ops::F16_DOT_STEP)) {
            for l in 0..ops::F16_DOT_STEP {
                acc[l] = ca[l].mul_add(cb[l], acc[l]);
            }
        }
        let mut sum = ops::dot_f16_vec(&acc) as f64;
        for i in whole..a.len() {
            sum += (a[i] * b[i]) as f64;
        }
        sum as f32
    } else {
        let mut acc = [0f32; 8];
        let whole = a.len() / 8 * 8;
        for (ca, cb) in a[..whole].chunks_exact(8).zip(b.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] = ca[l].mul_add(cb[l], acc[l]);
            }
        }
        let mut sum = ops::dot_f16_tiny(&acc);
        for i in whole..a.len() {
            sum += a[i] * b[i];
        }
        sum
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_at_zero_is_identity() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        rope(&mut x, 0, 4, 10000.0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
        rope(&mut x, 1, 4, 10000.0);
        // The first pair turns by 1 radian.
        assert!((x[0] - (1.0 * 1f32.cos() - 2.0 * 1f32.sin())).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_unit() {
        let mut out = vec![];
        ops::rms_norm(&[3.0, 4.0], &[1.0, 1.0], 0.0, &mut out);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 4.0 / rms).abs() < 1e-6);
    }
}

#[cfg(test)]
mod matmul_tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::Tensor;

    /// candle's quantized product against the dequantized weights in f32, for each type we
    /// ship, at decode (m = 1) and prefill (m = 5) shapes.
    #[test]
    fn quantized_products_match_dequantized() {
        for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            for (n, k) in [(64, 576), (96, 1536)] {
                let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let deq: Vec<f32> = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let data = q.data().unwrap();
                let lin = Linear::from_bytes("test", dtype, n, k, &data).unwrap();
                for m in [1, 5, 16, 37] {
                    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
                    let mut out = Vec::new();
                    lin.forward(&x, m, &mut out).unwrap();
                    let mut num = 0f64;
                    let mut den = 0f64;
                    for r in 0..m {
                        for c in 0..n {
                            let e: f64 = (0..k).map(|i| x[r * k + i] as f64 * deq[c * k + i] as f64).sum();
                            num += (out[r * n + c] as f64 - e).powi(2);
                            den += e * e;
                        }
                    }
                    let err = (num / den).sqrt();
                    assert!(err < 0.02, "{dtype:?} {n}x{k} m={m}: relative error {err}");
                }
            }
        }
    }
}
