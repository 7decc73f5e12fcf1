//! The in-memory image data set every image loader produces.

use super::io::derive_seed;
use crate::tensor::rng;
use crate::{Error, Result, Tensor};
use rand::seq::SliceRandom;

/// Which part of a data set with a fixed split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Images `[N, C, H, W]` as f32 in `[0, 1]`, row-major, with labels in
/// `0..num_classes`.
///
/// ```
/// use tamer::data::ImageDataset;
/// let ds = ImageDataset::new("toy", vec![0.0; 4 * 2 * 2], vec![0, 1, 1, 0], (1, 2, 2), 2).unwrap();
/// assert_eq!(ds.len(), 4);
/// let (a, b) = ds.split_at(3).unwrap();
/// assert_eq!((a.len(), b.len()), (3, 1));
/// assert_eq!(ds.label_histogram(), vec![2, 2]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ImageDataset {
    /// A short name for messages ("mnist train", "cifar10 test" ...).
    pub name: String,
    /// `[N, C, H, W]`, values in `[0, 1]`.
    pub images: Vec<f32>,
    /// `[N]`, values in `0..num_classes`.
    pub labels: Vec<i64>,
    /// `(C, H, W)` of one image.
    pub shape: (usize, usize, usize),
    pub num_classes: usize,
    /// Class names in label order, when the format provides them.
    pub class_names: Option<Vec<String>>,
}

impl ImageDataset {
    /// A data set after checking that the buffer sizes agree with the shape
    /// and that every label is a class.
    pub fn new(name: impl Into<String>, images: Vec<f32>, labels: Vec<i64>, shape: (usize, usize, usize), num_classes: usize) -> Result<Self> {
        let name = name.into();
        let per = shape.0 * shape.1 * shape.2;
        if per == 0 {
            return Err(Error::shape("ImageDataset", format!("{name}: image shape {shape:?} has a zero dimension")));
        }
        if images.len() != labels.len() * per {
            return Err(Error::shape(
                "ImageDataset",
                format!(
                    "{name}: {} pixel values for {} labels of shape {shape:?}, expected {}",
                    images.len(),
                    labels.len(),
                    labels.len() * per
                ),
            ));
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= num_classes) {
            return Err(Error::value(
                "ImageDataset",
                format!("{name}: label {l} of example {i} is outside 0..{num_classes}"),
            ));
        }
        Ok(ImageDataset {
            name,
            images,
            labels,
            shape,
            num_classes,
            class_names: None,
        })
    }

    /// The same data set with class names (one per class).
    pub fn with_class_names(mut self, names: &[&str]) -> Result<Self> {
        if names.len() != self.num_classes {
            return Err(Error::value(
                "ImageDataset",
                format!("{}: {} class names for {} classes", self.name, names.len(), self.num_classes),
            ));
        }
        self.class_names = Some(names.iter().map(|s| s.to_string()).collect());
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Values per image, `C·H·W`.
    pub fn image_len(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }
    /// Image `i` as a `[C, H, W]` slice (panics if `i >= len()`, like slice indexing).
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The examples at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<ImageDataset> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::index(
                "ImageDataset::subset",
                format!("{}: index {bad} out of range for {} examples", self.name, self.len()),
            ));
        }
        let n = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Ok(ImageDataset {
            name: self.name.clone(),
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        })
    }

    /// The first `n` examples and the rest (mnist10k's 8,000 / 2,000 split).
    pub fn split_at(&self, n: usize) -> Result<(ImageDataset, ImageDataset)> {
        if n > self.len() {
            return Err(Error::index(
                "ImageDataset::split_at",
                format!("{}: cannot take {n} of {} examples", self.name, self.len()),
            ));
        }
        let first: Vec<usize> = (0..n).collect();
        let rest: Vec<usize> = (n..self.len()).collect();
        Ok((self.subset(&first)?, self.subset(&rest)?))
    }

    /// A seeded random split: `round(fraction · N)` examples (shuffled) and the rest.
    pub fn random_split(&self, fraction: f64, seed: u64) -> Result<(ImageDataset, ImageDataset)> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(Error::value("ImageDataset::random_split", format!("fraction {fraction} is outside [0, 1]")));
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut rng(derive_seed(seed, &[SPLIT_TAG])));
        let k = (fraction * self.len() as f64).round() as usize;
        Ok((self.subset(&idx[..k])?, self.subset(&idx[k..])?))
    }

    /// How many examples each class has.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut h = vec![0; self.num_classes];
        for &l in &self.labels {
            h[l as usize] += 1;
        }
        h
    }

    /// Per-channel mean and (population) standard deviation over all pixels,
    /// for normalisation.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let (c, h, w) = self.shape;
        let plane = h * w;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for img in self.images.chunks_exact(c * plane) {
            for ch in 0..c {
                for &v in &img[ch * plane..(ch + 1) * plane] {
                    sum[ch] += v as f64;
                    sq[ch] += (v as f64) * (v as f64);
                }
            }
        }
        let count = (self.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sq.iter().zip(&mean).map(|(s, m)| ((s / count - m * m).max(0.0)).sqrt() as f32).collect();
        (mean.into_iter().map(|m| m as f32).collect(), std)
    }

    /// Images as an f32 `[N, C, H, W]` tensor and labels as an i64 `[N]` tensor.
    pub fn tensors(&self) -> Result<(Tensor, Tensor)> {
        let (c, h, w) = self.shape;
        Ok((
            Tensor::from_slice(&self.images, [self.len(), c, h, w])?,
            Tensor::from_slice(&self.labels, [self.len()])?,
        ))
    }
}

/// Tags the random-split stream apart from the loader's streams.
const SPLIT_TAG: u64 = 0x5b1f;
