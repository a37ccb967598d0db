//! Quantized matrix products with ggml's CPU arithmetic (Q4_0, Q4_1, Q8_0 weights).
//!
//! Why not candle's kernels: greedy decoding must pick the same tokens as llama.cpp, and the
//! logits of a 30-layer model move by ~1% when the products round differently. ggml's rules
//! (x86 AVX2 build, which is what llama.cpp runs on this kind of machine):
//!
//! - The activation row is quantized to the weight type's dot type, 32 values a block:
//!   Q8_1 for Q4_1, Q8_0 for Q4_0 and Q8_0. `amax` = max |x|, `d = amax / 127` (stored as
//!   f16), each value is `x * (127 / amax)` rounded half to even; Q8_1 also stores
//!   `s = f16(d * sum of the ints)` (with the f32 `d`, not the f16 one).
//! - The dot product of one weight row with one activation row keeps eight f32 lanes; lane
//!   `l` of block `b` gets the exact integer sum of the products of elements `4l..4l+4`,
//!   converted to f32 and accumulated with one fused multiply-add by `d_w * d_a` (an f32
//!   product). Q4_1 adds `m_w * s_a` per block into a separate f32 sum. At the end the lanes
//!   are summed as (l0+l4 + l2+l6) + (l1+l5 + l3+l7), then the `m` sum is added.
//!
//! The integer sums are exact, so an AVX2 kernel and the portable one give bit-identical
//! results (the portable one uses `f32::mul_add`, which is the same correctly rounded FMA).

use half::f16;

use crate::error::InferenceError;

/// Values per quantization block (every type here).
pub const BLOCK: usize = 32;
/// Lanes of the f32 accumulator in ggml's AVX2 kernels.
const LANES: usize = 8;

/// The weight types with a kernel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Kind {
    /// Bytes of one block in the GGUF layout.
    pub fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 2 + 16,
            Kind::Q4_1 => 2 + 2 + 16,
            Kind::Q8_0 => 2 + 32,
        }
    }
    /// Whether the activations carry the Q8_1 sum (`s`).
    fn wants_sum(self) -> bool {
        matches!(self, Kind::Q4_1)
    }
}

/// Activation rows quantized to Q8_0 / Q8_1, split into arrays for the kernels.
#[derive(Default)]
pub struct QuantRows {
    pub qs: Vec<i8>,
    /// The block scale as stored (f16) and widened to f32.
    pub d: Vec<f32>,
    /// Q8_1's `s` widened to f32 (zero for Q8_0).
    pub s: Vec<f32>,
    pub rows: usize,
    pub blocks_per_row: usize,
}

/// Quantizes `rows` rows of `x` (each `k` long, `k` a multiple of 32) the way ggml's
/// `quantize_row_q8_0` / `quantize_row_q8_1` do.
pub fn quantize_rows(x: &[f32], rows: usize, k: usize, with_sum: bool, out: &mut QuantRows) {
    match Kernel::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::Avx2` is only chosen when the CPU reports AVX2, FMA and F16C.
        Kernel::Avx2 => unsafe { quantize_rows_avx2(x, rows, k, with_sum, out) },
        Kernel::Portable => quantize_rows_impl(x, rows, k, with_sum, out),
    }
}

/// The same code with rounding and f16 conversion as single instructions (without them each
/// value was a libm `rintf` call): the results are identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_rows_avx2(x: &[f32], rows: usize, k: usize, with_sum: bool, out: &mut QuantRows) {
    quantize_rows_impl(x, rows, k, with_sum, out)
}

#[inline(always)]
fn quantize_rows_impl(x: &[f32], rows: usize, k: usize, with_sum: bool, out: &mut QuantRows) {
    assert_eq!(k % BLOCK, 0);
    assert_eq!(x.len(), rows * k);
    let nb = rows * k / BLOCK;
    out.qs.clear();
    out.qs.resize(rows * k, 0);
    out.d.clear();
    out.d.resize(nb, 0.0);
    out.s.clear();
    out.s.resize(nb, 0.0);
    out.rows = rows;
    out.blocks_per_row = k / BLOCK;
    for (b, block) in x.chunks_exact(BLOCK).enumerate() {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in out.qs[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(block) {
            // |v * id| <= 127 up to rounding of `id`, which cannot reach 127.5.
            let r = (v * id).round_ties_even() as i32;
            debug_assert!((-127..=127).contains(&r));
            *q = r as i8;
            sum += r;
        }
        out.d[b] = f16::from_f32(d).to_f32();
        if with_sum {
            out.s[b] = f16::from_f32(d * sum as f32).to_f32();
        }
    }
}

/// A weight matrix `[n_out, n_in]` in one of the block types, as read from the file.
pub struct QMatrix {
    pub kind: Kind,
    pub n_out: usize,
    pub n_in: usize,
    data: Vec<u8>,
}

impl QMatrix {
    pub fn new(kind: Kind, n_out: usize, n_in: usize, data: &[u8]) -> Result<QMatrix, InferenceError> {
        if n_in % BLOCK != 0 || data.len() != n_out * n_in / BLOCK * kind.block_bytes() {
            return Err(InferenceError::Metadata(format!("{kind:?} matrix {n_out}x{n_in}: {} bytes", data.len())));
        }
        Ok(QMatrix { kind, n_out, n_in, data: data.to_vec() })
    }

    fn row_bytes(&self) -> usize {
        self.n_in / BLOCK * self.kind.block_bytes()
    }

    /// Row `r` as f32 (ggml's dequantization: `q * d`, or `q * d + m` for Q4_1).
    pub fn dequantize_row(&self, r: usize, out: &mut Vec<f32>) {
        assert!(r < self.n_out);
        let bytes = &self.data[r * self.row_bytes()..][..self.row_bytes()];
        for blk in bytes.chunks_exact(self.kind.block_bytes()) {
            let (d, m, vals) = unpack(self.kind, blk);
            out.extend(vals.iter().map(|&q| q as f32 * d + m));
        }
    }

    /// `out[r][o] = x[r] . W[o]` for the `rows` quantized activation rows in `a`.
    pub fn matmul(&self, a: &QuantRows, out: &mut [f32]) {
        assert_eq!(a.blocks_per_row * BLOCK, self.n_in);
        assert_eq!(out.len(), a.rows * self.n_out);
        let rows = a.rows;
        let n_out = self.n_out;
        let threads = rayon::current_num_threads().max(1);
        // Each task owns a contiguous range of weight rows for every activation row; the
        // result is written to a per-task buffer and scattered, because the output is
        // activation-row-major.
        let chunk = n_out.div_ceil(threads * 4).max(16);
        let kernel = Kernel::detect();
        if rows == 1 {
            QMatrix::matvec_many(&[self], a, &mut [out]);
        } else {
            use rayon::prelude::*;
            let parts: Vec<(usize, Vec<f32>)> = (0..n_out.div_ceil(chunk))
                .into_par_iter()
                .map(|c| {
                    let lo = c * chunk;
                    let hi = (lo + chunk).min(n_out);
                    let mut buf = vec![0f32; (hi - lo) * rows];
                    for o in lo..hi {
                        for r in 0..rows {
                            buf[r * (hi - lo) + (o - lo)] = self.dot(kernel, o, a, r);
                        }
                    }
                    (lo, buf)
                })
                .collect();
            for (lo, buf) in parts {
                let w = buf.len() / rows;
                for r in 0..rows {
                    out[r * n_out + lo..][..w].copy_from_slice(&buf[r * w..][..w]);
                }
            }
        }
    }

    /// `outs[i] = a . mats[i]^T` for one activation row shared by several matrices (q, k and v;
    /// gate and up): one parallel region for all of them, because waking the pool per matrix
    /// cost more than the smaller products themselves.
    pub fn matvec_many(mats: &[&QMatrix], a: &QuantRows, outs: &mut [&mut [f32]]) {
        use rayon::prelude::*;
        assert_eq!(a.rows, 1);
        assert_eq!(mats.len(), outs.len());
        let threads = rayon::current_num_threads().max(1);
        let total: usize = mats.iter().map(|m| m.n_out).sum();
        // Rows cost the same: one task per thread is balanced, and each task more is one more
        // hand-over between threads.
        let chunk = total.div_ceil(threads).max(16);
        let kernel = Kernel::detect();
        let mut tasks: Vec<(&QMatrix, usize, &mut [f32])> = Vec::new();
        for (m, out) in mats.iter().zip(outs.iter_mut()) {
            assert_eq!(a.blocks_per_row * BLOCK, m.n_in);
            assert_eq!(out.len(), m.n_out);
            for (c, o) in out.chunks_mut(chunk).enumerate() {
                tasks.push((m, c * chunk, o));
            }
        }
        let run = |(m, lo, o): (&QMatrix, usize, &mut [f32])| {
            for (i, v) in o.iter_mut().enumerate() {
                *v = m.dot(kernel, lo + i, a, 0);
            }
        };
        if threads == 1 {
            // No hand-over to the pool's thread and back: that is a sleep and a wake per product.
            tasks.into_iter().for_each(run);
        } else {
            tasks.into_par_iter().for_each(run);
        }
    }

    fn dot(&self, kernel: Kernel, o: usize, a: &QuantRows, r: usize) -> f32 {
        let rb = self.row_bytes();
        let w = &self.data[o * rb..][..rb];
        let nb = a.blocks_per_row;
        let qs = &a.qs[r * nb * BLOCK..][..nb * BLOCK];
        let d = &a.d[r * nb..][..nb];
        let s = &a.s[r * nb..][..nb];
        match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::Avx2` is only chosen when the CPU reports AVX2, FMA and F16C.
            Kernel::Avx2 => unsafe { avx2::dot(self.kind, w, qs, d, s) },
            Kernel::Portable => dot_portable(self.kind, w, qs, d, s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
            // Once per process: reading the environment per product showed in profiles.
            return *KERNEL.get_or_init(|| {
                let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
                if avx2 && std::env::var_os("AITBC_INFERENCE_PORTABLE").is_none() {
                    Kernel::Avx2
                } else {
                    Kernel::Portable
                }
            });
        }
        #[allow(unreachable_code)]
        Kernel::Portable
    }
}

/// One block's scale `d`, offset `m` (0 unless Q4_1) and its 32 integer values in element
/// order (Q4_1: the unsigned nibbles; Q4_0: nibble - 8).
fn unpack(kind: Kind, blk: &[u8]) -> (f32, f32, [i8; BLOCK]) {
    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    let mut v = [0i8; BLOCK];
    match kind {
        Kind::Q8_0 => {
            for (o, &b) in v.iter_mut().zip(&blk[2..34]) {
                *o = b as i8;
            }
            (d, 0.0, v)
        }
        Kind::Q4_0 | Kind::Q4_1 => {
            let (m, qs, off) = match kind {
                Kind::Q4_1 => (f16::from_le_bytes([blk[2], blk[3]]).to_f32(), &blk[4..20], 0),
                _ => (0.0, &blk[2..18], 8),
            };
            for j in 0..16 {
                v[j] = (qs[j] & 0x0F) as i8 - off;
                v[j + 16] = (qs[j] >> 4) as i8 - off;
            }
            (d, m, v)
        }
    }
}

/// ggml's `hsum_float_8`: (l0+l4 + l2+l6) + (l1+l5 + l3+l7).
#[inline(always)]
pub fn hsum8(a: &[f32; LANES]) -> f32 {
    let r = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// The portable kernel: the same lanes and roundings as the AVX2 one.
fn dot_portable(kind: Kind, w: &[u8], qs: &[i8], d: &[f32], s: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut summs = 0f32;
    for (b, blk) in w.chunks_exact(kind.block_bytes()).enumerate() {
        let (dw, mw, v) = unpack(kind, blk);
        let a = &qs[b * BLOCK..][..BLOCK];
        let dd = dw * d[b];
        for (l, acc_l) in acc.iter_mut().enumerate() {
            let mut sum = 0i32;
            for k in 4 * l..4 * l + 4 {
                sum += v[k] as i32 * a[k] as i32;
            }
            *acc_l = dd.mul_add(sum as f32, *acc_l);
        }
        if kind.wants_sum() {
            summs += mw * s[b];
        }
    }
    hsum8(&acc) + summs
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Kind, BLOCK};
    use std::arch::x86_64::*;

    /// f16 to f32 with the F16C instruction (exact, like `half`'s, but inline: a call per block
    /// scale cost 7% of decoding).
    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(kind: Kind, w: &[u8], qs: &[i8], d: &[f32], s: &[f32]) -> f32 {
        let bb = kind.block_bytes();
        let nb = w.len() / bb;
        assert!(w.len() == nb * bb && qs.len() >= nb * BLOCK && d.len() >= nb && s.len() >= nb);
        // SAFETY (every pointer read below): block `b < nb` of `w` spans `b*bb..(b+1)*bb`, of
        // `qs` `b*32..(b+1)*32`, and `d`/`s` have `nb` entries, all checked just above; the
        // loads are unaligned loads.
        let (wp, qp) = (w.as_ptr(), qs.as_ptr());
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        let ones = _mm256_set1_epi16(1);
        let low = _mm256_set1_epi8(0x0F);
        // One loop per kind, so the kind is not tested per block.
        match kind {
            Kind::Q8_0 => {
                for b in 0..nb {
                    let blk = wp.add(b * bb);
                    let qa = _mm256_loadu_si256(qp.add(b * BLOCK) as *const __m256i);
                    let qw = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                    // |w| times sign-adjusted a: products fit i16 pairs (|q| <= 127).
                    let aw = _mm256_sign_epi8(qw, qw);
                    let sa = _mm256_sign_epi8(qa, qw);
                    let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sa), ones);
                    let dd = _mm256_set1_ps(f16_at(blk) * *d.get_unchecked(b));
                    acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc);
                }
            }
            Kind::Q4_0 => {
                let eight = _mm256_set1_epi8(8);
                for b in 0..nb {
                    let blk = wp.add(b * bb);
                    let qa = _mm256_loadu_si256(qp.add(b * BLOCK) as *const __m256i);
                    let raw = _mm_loadu_si128(blk.add(2) as *const __m128i);
                    let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
                    let qw = _mm256_sub_epi8(nib, eight);
                    let aw = _mm256_sign_epi8(qw, qw);
                    let sa = _mm256_sign_epi8(qa, qw);
                    let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sa), ones);
                    let dd = _mm256_set1_ps(f16_at(blk) * *d.get_unchecked(b));
                    acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc);
                }
            }
            Kind::Q4_1 => {
                for b in 0..nb {
                    let blk = wp.add(b * bb);
                    let qa = _mm256_loadu_si256(qp.add(b * BLOCK) as *const __m256i);
                    let raw = _mm_loadu_si128(blk.add(4) as *const __m128i);
                    let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
                    // The nibbles are unsigned: maddubs takes them as the unsigned operand.
                    let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(nib, qa), ones);
                    summs += f16_at(blk.add(2)) * *s.get_unchecked(b);
                    let dd = _mm256_set1_ps(f16_at(blk) * *d.get_unchecked(b));
                    acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc);
                }
            }
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        super::hsum8(&lanes) + summs
    }
}

/// Which activation quantization a weight kind needs.
pub fn needs_sum(kind: Kind) -> bool {
    kind.wants_sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn random_matrix(kind: Kind, n_out: usize, n_in: usize, seed: &mut u64) -> QMatrix {
        let mut data = Vec::new();
        for _ in 0..n_out * n_in / BLOCK {
            data.extend_from_slice(&f16::from_f32(0.01 + lcg(seed).abs() * 0.05).to_le_bytes());
            if kind == Kind::Q4_1 {
                data.extend_from_slice(&f16::from_f32(lcg(seed) * 0.3).to_le_bytes());
            }
            let n = if kind == Kind::Q8_0 { 32 } else { 16 };
            for _ in 0..n {
                data.push((lcg(seed) * 1e6) as i64 as u8);
            }
        }
        QMatrix::new(kind, n_out, n_in, &data).unwrap()
    }

    /// The AVX2 and portable kernels agree bit for bit, and both are within the 8-bit
    /// activation quantization's error of the f64 product with the dequantized weights.
    #[test]
    fn kernels_agree_and_match_f64() {
        let mut seed = 7;
        for kind in [Kind::Q4_0, Kind::Q4_1, Kind::Q8_0] {
            let (n_out, n_in) = (40, 576);
            let m = random_matrix(kind, n_out, n_in, &mut seed);
            for rows in [1, 3] {
                let x: Vec<f32> = (0..rows * n_in).map(|_| lcg(&mut seed) * 3.0).collect();
                let mut q = QuantRows::default();
                quantize_rows(&x, rows, n_in, needs_sum(kind), &mut q);
                let mut out = vec![0f32; rows * n_out];
                m.matmul(&q, &mut out);
                let mut row = Vec::new();
                let (mut num, mut den) = (0f64, 0f64);
                for o in 0..n_out {
                    row.clear();
                    m.dequantize_row(o, &mut row);
                    for r in 0..rows {
                        let portable = m.dot(Kernel::Portable, o, &q, r);
                        assert_eq!(portable.to_bits(), out[r * n_out + o].to_bits(), "{kind:?} row {o}");
                        let e: f64 = (0..n_in).map(|i| row[i] as f64 * x[r * n_in + i] as f64).sum();
                        num += (out[r * n_out + o] as f64 - e).powi(2);
                        den += e * e;
                    }
                }
                let err = (num / den).sqrt();
                // 8-bit activations: about 0.5/127 relative per value, averaged down.
                assert!(err < 0.01, "{kind:?} rows={rows}: relative error {err}");
            }
        }
    }

    #[test]
    fn quantization_rounds_half_to_even_and_sums() {
        // amax 127 makes id exactly 1: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0.
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = 2.5;
        x[4] = -0.5;
        let mut q = QuantRows::default();
        quantize_rows(&x, 1, 32, true, &mut q);
        assert_eq!(&q.qs[..5], &[127, 0, 2, 2, 0]);
        assert_eq!(q.d[0], 1.0);
        assert_eq!(q.s[0], 131.0);
    }
}
