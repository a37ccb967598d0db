//! The key/value cache: for every layer, the keys and values of every position seen so far,
//! so that each new token attends to the past without recomputing it.

/// The most positions any cache holds, whatever the model's trained context says: it bounds
/// the memory of one generation (SmolLM2-135M: 30 layers x 2 x 192 x 4 bytes = 46 KiB a
/// position, 377 MiB at this limit).
pub const CONTEXT_TOKENS_MAX: usize = 8192;

/// Per-layer keys and values, position-major: position `p`, kv-head `h` starts at
/// `(p * kv_heads + h) * head_dim`. Stored as f32 values rounded to f16, which is what
/// llama.cpp's default F16 cache holds: the same numbers make the same greedy choices.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    kv_dim: usize,
    len: usize,
    capacity_tokens: usize,
}

impl KvCache {
    /// A cache for `capacity_tokens` positions of `layers` layers of `kv_dim` values each;
    /// memory grows as positions are appended, up to the capacity.
    pub fn new(layers: usize, kv_dim: usize, capacity_tokens: usize) -> KvCache {
        assert!(capacity_tokens <= CONTEXT_TOKENS_MAX);
        assert!(kv_dim > 0);
        KvCache {
            layers: (0..layers)
                .map(|_| (Vec::with_capacity(capacity_tokens * kv_dim), Vec::with_capacity(capacity_tokens * kv_dim)))
                .collect(),
            kv_dim,
            len: 0,
            capacity_tokens,
        }
    }

    /// Positions committed (every layer holds them).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity_tokens(&self) -> usize {
        self.capacity_tokens
    }

    /// Appends the keys and values of `tokens` new positions to `layer`; the caller appends to
    /// every layer, then `commit`s.
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        assert_eq!(k.len(), v.len());
        assert_eq!(k.len() % self.kv_dim, 0);
        let (ks, vs) = &mut self.layers[layer];
        assert_eq!(ks.len(), self.len * self.kv_dim, "layer appended twice before commit");
        assert!(self.len + k.len() / self.kv_dim <= self.capacity_tokens, "cache capacity exceeded");
        ks.extend(k.iter().map(|&x| round_f16(x)));
        vs.extend(v.iter().map(|&x| round_f16(x)));
    }

    /// Keys and values of `layer` for every position appended so far (committed or not).
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        let (k, v) = &self.layers[layer];
        (k, v)
    }

    pub fn commit(&mut self, tokens: usize) {
        self.len += tokens;
        for (k, v) in &self.layers {
            assert_eq!(k.len(), self.len * self.kv_dim);
            assert_eq!(v.len(), self.len * self.kv_dim);
        }
    }
}

/// `x` rounded to the nearest f16 (and back).
pub fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}
