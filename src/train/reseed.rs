//! Reseeding the random layers of a model, so dropout and drop-path masks are
//! a pure function of (run seed, step) and a resumed run draws the masks the
//! uninterrupted one would have drawn.
//!
//! The RNG inside a layer (`Mutex<TensorRng>`) cannot be serialised (rand's
//! `StdRng` keeps its state private), so instead of saving it the trainer
//! replaces it before every micro-batch with one seeded from
//! `derive_seed(run seed, [DROPOUT_TAG, step, micro-batch])` (`DROPOUT_TAG`
//! a constant of the trainer that keeps this stream apart from the data
//! streams); layer `k` (in a fixed walk order) gets `derive_seed(that, [k])`.

use crate::data::io::derive_seed;
use crate::models::{Gpt, TransformerEncoder, VisionTransformer};
use crate::nn::{DropPath, Dropout, Mlp, MultiHeadSelfAttention, TransformerBlock};
use crate::{rng, TensorRng};
use std::sync::Mutex;

/// A module whose random layers can be listed and reseeded.
pub trait Reseed {
    /// Push the RNG of every random layer, in a fixed order.
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>);

    /// Give random layer `k` a fresh RNG seeded with `derive_seed(seed, [k])`.
    ///
    /// ```
    /// use tamer::nn::Dropout;
    /// use tamer::train::Reseed;
    /// use tamer::{DType, Tensor};
    /// let d = Dropout::new(0.5, 1).unwrap();
    /// let x = Tensor::ones([64], DType::F32).unwrap();
    /// d.reseed(7);
    /// let a = d.forward(&x).unwrap().to_vec::<f32>().unwrap();
    /// d.reseed(7);
    /// assert_eq!(d.forward(&x).unwrap().to_vec::<f32>().unwrap(), a);
    /// ```
    fn reseed(&self, seed: u64) {
        let mut rngs = Vec::new();
        self.collect_rngs(&mut rngs);
        for (k, m) in rngs.into_iter().enumerate() {
            *m.lock().unwrap_or_else(|e| e.into_inner()) = rng(derive_seed(seed, &[k as u64]));
        }
    }
}

impl Reseed for Dropout {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        out.push(&self.rng);
    }
}

impl Reseed for DropPath {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        out.push(&self.rng);
    }
}

impl Reseed for Mlp {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        self.dropout.collect_rngs(out);
    }
}

impl Reseed for MultiHeadSelfAttention {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        self.attn_dropout.collect_rngs(out);
        self.proj_dropout.collect_rngs(out);
    }
}

impl Reseed for TransformerBlock {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        self.attn.collect_rngs(out);
        if let Some(m) = &self.mlp {
            m.collect_rngs(out);
        }
        self.drop_path1.collect_rngs(out);
        self.drop_path2.collect_rngs(out);
    }
}

impl Reseed for VisionTransformer {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        self.pos_drop.collect_rngs(out);
        for b in &self.blocks {
            b.collect_rngs(out);
        }
        self.head_drop.collect_rngs(out);
    }
}

impl Reseed for Gpt {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        self.drop.collect_rngs(out);
        for b in &self.h {
            b.collect_rngs(out);
        }
    }
}

impl Reseed for TransformerEncoder {
    fn collect_rngs<'a>(&'a self, out: &mut Vec<&'a Mutex<TensorRng>>) {
        self.drop.collect_rngs(out);
        for b in &self.blocks {
            b.collect_rngs(out);
        }
    }
}
