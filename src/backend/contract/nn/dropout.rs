//! Dropout's contract: the mask rule (an element is dropped when a uniform
//! 32-bit draw falls below [`drop_threshold`], survivors are scaled by
//! [`keep_scale`]), the two generators that feed it, and [`DropoutKernels`].
//!
//! Each device has its own generator: the CPU draws one 32-bit decision per
//! element from the caller's RNG ([`keep_flags`]); CUDA draws ONE `u64` seed
//! from it and generates the mask on the device with the counter-based
//! Philox4x32-10 (cuda/dropout.cu), so no mask crosses the bus.
//! [`philox4x32_10`] and [`philox_keep_flags`] are the host reference of that
//! generator, tested here against the published Random123 known-answer
//! vectors and in the CUDA tests against the device mask, bit for bit.

use crate::backend::contract::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Device};
use crate::{Error, Result};
use rand::RngCore;

/// The kernel a backend provides for dropout.
pub trait DropoutKernels: Sized {
    /// A new storage on `device` (one of this backend's) holding the scaled
    /// keep mask for `n` elements of `dtype`: [`keep_scale`]`(p)` where an
    /// element is kept, 0 where it is dropped (probability `p`). The
    /// randomness comes from `rng` through the device's own generator (see
    /// the module docs). Like the other constructors it takes a device, not
    /// an operand: the mask depends on no tensor's values.
    fn dropout_mask(device: Device, dtype: DType, n: usize, p: f64, rng: &mut dyn RngCore) -> Result<Self>;
}

/// [`DropoutKernels::dropout_mask`]: an f32 or f64 mask, `p` in `[0, 1]`.
pub fn check_dropout_mask(dtype: DType, p: f64) -> Result<()> {
    const OP: &str = "dropout";
    check_dtype(OP, dtype, COMPUTE_FLOATS)?;
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::value(OP, format!("drop probability {p} is outside [0, 1]")));
    }
    Ok(())
}

/// A uniform 32-bit draw below this drops its element: `floor(p·2³²)`. p = 1
/// gives 2³², above every u32: everything is dropped.
pub fn drop_threshold(p: f64) -> u64 {
    (p * 4_294_967_296.0) as u64
}

/// The value of a kept element in the scaled mask: `1/(1−p)`, 0 for p = 1.
pub fn keep_scale(p: f64) -> f64 {
    if p < 1.0 {
        1.0 / (1.0 - p)
    } else {
        0.0
    }
}

/// The CPU's generator: one keep/drop decision per element, in row-major
/// order; an element is dropped when a uniform 32-bit draw from `rng` falls
/// below `p·2³²` (two draws per `u64`).
pub fn keep_flags(n: usize, p: f64, rng: &mut dyn RngCore) -> Vec<bool> {
    let threshold = drop_threshold(p);
    let mut keep = Vec::with_capacity(n + 1);
    while keep.len() < n {
        let bits = rng.next_u64();
        keep.push((bits & 0xFFFF_FFFF) >= threshold);
        keep.push((bits >> 32) >= threshold);
    }
    keep.truncate(n);
    keep
}

/// Philox's round multipliers (Random123's PHILOX_M4x32_0/1) and key
/// increments (PHILOX_W32_0/1: the golden ratio and √3 − 1, as 32-bit fractions).
const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// Philox4x32-10 (Salmon et al., SC 2011; Random123's `philox4x32_R(10, ..)`):
/// a keyed bijection of 128-bit counters. Ten rounds, each two 32×32→64-bit
/// multiplies mixing the even words into the odd ones, the key bumped by the
/// Weyl constants between rounds. The same function as `philox4x32_10` in
/// cuda/dropout.cu.
///
/// ```
/// use tamer::ops::nn::dropout::philox4x32_10;
/// assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
/// ```
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W[0]);
            k[1] = k[1].wrapping_add(PHILOX_W[1]);
        }
        let p0 = u64::from(PHILOX_M[0]) * u64::from(c[0]);
        let p1 = u64::from(PHILOX_M[1]) * u64::from(c[2]);
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// The CUDA dropout rule on the host: element `i` is kept iff word `i % 4` of
/// `philox4x32_10([lo32(i/4), hi32(i/4), 0, 0], [lo32(seed), hi32(seed)])` is
/// at least [`drop_threshold`]`(p)`.
pub fn philox_keep_flags(n: usize, p: f64, seed: u64) -> Vec<bool> {
    let threshold = drop_threshold(p);
    let key = [seed as u32, (seed >> 32) as u32];
    let mut keep = Vec::with_capacity(n.next_multiple_of(4));
    for g in 0..n.div_ceil(4) as u64 {
        let r = philox4x32_10([g as u32, (g >> 32) as u32, 0, 0], key);
        keep.extend(r.iter().map(|&w| u64::from(w) >= threshold));
    }
    keep.truncate(n);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn the_mask_is_f32_or_f64_with_p_in_the_unit_interval() {
        assert!(check_dropout_mask(DType::F32, 0.0).is_ok());
        assert!(check_dropout_mask(DType::F64, 1.0).is_ok());
        let e = check_dropout_mask(DType::F16, 0.5).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DType);
        assert!(e.message.starts_with("dtype f16 is not supported"), "{e}");
        for p in [-0.1, 1.5, f64::NAN] {
            let e = check_dropout_mask(DType::F32, p).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Value, "{p}");
            assert!(e.message.contains("outside [0, 1]"), "{e}");
        }
    }

    /// Random123's known-answer vectors for philox4x32-10 (kat_vectors):
    /// counter, key, output.
    #[test]
    fn philox_matches_the_random123_known_answers() {
        let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            ([0; 4], [0; 2], [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]),
            ([u32::MAX; 4], [u32::MAX; 2], [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in kat {
            assert_eq!(philox4x32_10(ctr, key), want, "counter {ctr:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn philox_flags_follow_the_counter_rule() {
        let seed = 0x0123_4567_89ab_cdef_u64;
        let p = 0.5;
        let keep = philox_keep_flags(4 * 3 + 2, p, seed);
        assert_eq!(keep.len(), 14);
        let key = [0x89ab_cdef, 0x0123_4567];
        for (i, &k) in keep.iter().enumerate() {
            let r = philox4x32_10([(i / 4) as u32, 0, 0, 0], key);
            assert_eq!(k, u64::from(r[i % 4]) >= drop_threshold(p), "element {i}");
        }
        // A prefix of a longer mask is the shorter mask.
        assert_eq!(&philox_keep_flags(1000, p, seed)[..14], &keep[..]);
        // p = 0 keeps everything, p = 1 drops everything.
        assert!(philox_keep_flags(33, 0.0, seed).iter().all(|&k| k));
        assert!(philox_keep_flags(33, 1.0, seed).iter().all(|&k| !k));
    }

    #[test]
    fn philox_mask_drops_about_p() {
        let n = 1 << 16;
        for p in [0.1, 0.5, 0.9] {
            let dropped = philox_keep_flags(n, p, 7).iter().filter(|&&k| !k).count() as f64;
            let sigma = (n as f64 * p * (1.0 - p)).sqrt();
            assert!((dropped - n as f64 * p).abs() < 4.0 * sigma, "p {p}: {dropped} of {n} dropped");
        }
    }
}
