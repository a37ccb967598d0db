//! Choosing the next token from the logits: greedy at temperature 0, otherwise temperature
//! then nucleus (top-p) sampling with a seeded generator, so that the same seed and the same
//! inputs give the same text on the same backend.

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-known generator whose output for a seed is
/// fixed forever by its definition, unlike a library generator whose algorithm may change with
/// a version (reproducibility for a seed is part of the API).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: Rng,
    /// Scratch: (probability, token) of the candidates, reused between steps.
    candidates: Vec<(f32, u32)>,
}

impl Sampler {
    /// `temperature` >= 0 and `top_p` in (0, 1]; the caller validates (`GenerateRequest`).
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Sampler {
        assert!(temperature.is_finite() && temperature >= 0.0);
        assert!(top_p > 0.0 && top_p <= 1.0);
        Sampler { temperature, top_p, rng: Rng::new(seed), candidates: Vec::new() }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        assert!(!logits.is_empty());
        if self.is_greedy() {
            return argmax(logits);
        }
        // Softmax of logits / temperature, from the maximum for stability. A NaN logit gets
        // probability 0 rather than poisoning the sums.
        let max = logits.iter().copied().filter(|l| !l.is_nan()).fold(f32::NEG_INFINITY, f32::max);
        self.candidates.clear();
        let mut sum = 0f64;
        for (i, &l) in logits.iter().enumerate() {
            let p = if l.is_nan() { 0.0 } else { ((l - max) / self.temperature).exp() };
            sum += p as f64;
            self.candidates.push((p, i as u32));
        }
        if sum.is_nan() || sum <= 0.0 || !sum.is_finite() {
            return argmax(logits);
        }
        // Most probable first; equal probabilities by token id, so the order is total.
        self.candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        // The nucleus: the fewest most-probable tokens whose mass reaches top_p (at least one).
        let target = self.top_p as f64 * sum;
        let mut kept = 0;
        let mut mass = 0f64;
        for &(p, _) in &self.candidates {
            mass += p as f64;
            kept += 1;
            if mass >= target {
                break;
            }
        }
        let r = self.rng.next_f64() * mass;
        let mut acc = 0f64;
        for &(p, id) in &self.candidates[..kept] {
            acc += p as f64;
            if r < acc {
                return id;
            }
        }
        self.candidates[kept - 1].1
    }
}

/// The index of the largest logit, the first one on ties (as llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}
