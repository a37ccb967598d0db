//! The small operations between the matrix products, with ggml's CPU rounding (AVX2 build):
//! its vectorised `exp` (used by softmax and SiLU), its f16 dot products (the K.Q and
//! softmax.V products of the F16 KV cache), and its reduction orders. Each function says which
//! ggml operation it reproduces and how.
//!
//! Everything is written once with `f32::mul_add` (a correctly rounded FMA, like the
//! `vfmadd` ggml uses); the hot callers also compile it for AVX2+FMA (`#[target_feature]`), so the
//! FMAs are instructions rather than libm calls. Both give the same bits.

use crate::quant::hsum8;

/// ggml pads the KV length of an attention row so that vector loops have no tail; the padded
/// positions are masked (softmax weight 0). Zeros change no sum, so padding our rows to
/// this multiple with zeros reproduces ggml's lane assignment.
pub const F16_DOT_STEP: usize = 32;
/// Lanes of ggml's softmax loop (AVX2: 8).
pub const SOFTMAX_STEP: usize = 8;

/// ggml's `ggml_v_expf` (the AVX2 one, ARM's optimized-routines algorithm: 2^n * poly(b)
/// with the special cases for |n| > 126), one lane at a time: the same operations in the
/// same order give the same bits as the vector code.
#[inline(always)]
pub fn expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 1.5 * 2^23: rounds to an integer when added
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(f32::from_bits(0x35bf_be8e), (-n).mul_add(f32::from_bits(0x3f31_7200), x));
    let e = z.to_bits().wrapping_shl(23);
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(u, f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)))
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 || n.is_nan() {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// ggml's SwiGLU (`ggml_vec_swiglu_f32`, vector part): `g / (1 + exp(0 - g)) * u`.
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    #[inline(always)]
    fn body(g: &mut [f32], u: &[f32]) {
        for (gi, &ui) in g.iter_mut().zip(u) {
            let x = *gi;
            *gi = x / (1.0 + expf(0.0 - x)) * ui;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fast(g: &mut [f32], u: &[f32]) {
            body(g, u)
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features `fast` is compiled for.
            return unsafe { fast(g, u) };
        }
    }
    body(g, u)
}

/// ggml's RMS norm followed by the weight multiply: the sum of f32 squares in f64, the mean
/// back in f32, `scale = 1 / sqrtf(mean + eps)`, then `(x * scale) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut Vec<f32>) {
    let n = w.len();
    assert_eq!(x.len() % n, 0);
    out.clear();
    for row in x.chunks_exact(n) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(&v, &wi)| (v * scale) * wi));
    }
}

/// ggml's softmax row (`soft_max_f32` with the scale applied first, then
/// `ggml_vec_soft_max_f32`): exp of groups of 8 summed as `hsum_float_8` into an f64, then
/// every value times `f32(1 / sum)`. `row` holds the unscaled K.Q values of the unmasked
/// positions; masked positions would add exact zeros.
#[inline(always)]
pub fn softmax(row: &mut [f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for v in row.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    let mut sum = 0f64;
    for group in row.chunks_mut(SOFTMAX_STEP) {
        let mut lanes = [0f32; SOFTMAX_STEP];
        for (l, v) in lanes.iter_mut().zip(group.iter_mut()) {
            *v = expf(*v - max);
            *l = *v;
        }
        sum += hsum8(&lanes) as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// ggml's `ggml_vec_dot_f16` (decode: one query row): four accumulators of eight lanes over
/// steps of 32, FMA; reduced as (a0 + a2) + (a1 + a3), then the 8 lanes as
/// (l0+l4 + l1+l5) + (l2+l6 + l3+l7) (two `hadd`s). `x` and `y` hold f16 values.
#[inline(always)]
pub fn dot_f16_vec(acc: &[f32; F16_DOT_STEP]) -> f32 {
    let mut a = [0f32; 8];
    for l in 0..8 {
        a[l] = (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]);
    }
    let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// llamafile's tinyBLAS F16 kernel (prefill: several query rows): one accumulator of eight
/// lanes over steps of 8, FMA, reduced as `hsum_float_8`.
#[inline(always)]
pub fn dot_f16_tiny(acc: &[f32; 8]) -> f32 {
    hsum8(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_close_to_exp() {
        for i in -2000..200 {
            let x = i as f32 * 0.05;
            let (ours, libm) = (expf(x), x.exp());
            assert!((ours - libm).abs() <= libm * 4e-7 + f32::MIN_POSITIVE, "{x}: {ours} vs {libm}");
        }
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(0.0), 1.0);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        softmax(&mut row, 0.125);
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-5);
    }
}
