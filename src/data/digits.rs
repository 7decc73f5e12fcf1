//! The UCI optical handwritten digits (1,797 images of 8×8 pixels, values
//! 0..16), vendored in `data/digits.csv.gz` and embedded in the binary.
//!
//! Source: E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten
//! Digits", UCI Machine Learning Repository, CC BY 4.0 (file as shipped by
//! scikit-learn). See data/README.md.

use super::image::ImageDataset;
use crate::{Error, Result, Tensor};

/// The embedded, gzip-compressed CSV: 64 pixel values then the label per row.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

pub const IMAGE_SIDE: usize = 8;
pub const NUM_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
pub const NUM_CLASSES: usize = 10;

/// Images as f32 in [0, 1] (pixel / 16) and labels 0..9.
#[derive(Clone, Debug)]
pub struct Digits {
    /// Row-major, `NUM_PIXELS` values per image.
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Digits {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Images as `[n, 64]` f32 and labels as `[n]` i64 tensors.
    pub fn tensors(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::from_slice(&self.pixels, [self.len(), NUM_PIXELS])?,
            Tensor::from_slice(&self.labels, [self.len()])?,
        ))
    }
    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Digits {
        let mut pixels = Vec::with_capacity(indices.len() * NUM_PIXELS);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * NUM_PIXELS..(i + 1) * NUM_PIXELS]);
            labels.push(self.labels[i]);
        }
        Digits { pixels, labels }
    }
    /// As an [`ImageDataset`] of shape (1, 8, 8).
    pub fn to_image_dataset(&self, name: &str) -> Result<ImageDataset> {
        ImageDataset::new(name, self.pixels.clone(), self.labels.clone(), (1, IMAGE_SIDE, IMAGE_SIDE), NUM_CLASSES)
    }
}

/// Load the embedded digits.
pub fn load() -> Result<Digits> {
    parse_gz(DIGITS_CSV_GZ, "embedded digits.csv.gz")
}

/// Parse a gzip-compressed digits CSV; `name` is used in error messages.
pub fn parse_gz(bytes: &[u8], name: &str) -> Result<Digits> {
    if !super::io::is_gzip(bytes) {
        return Err(Error::format(
            "digits",
            format!("{name}: not a valid gzip-compressed text file (no gzip magic)"),
        ));
    }
    let text = super::io::maybe_gunzip("digits", bytes.to_vec(), name)?;
    let text = String::from_utf8(text).map_err(|e| Error::format("digits", format!("{name}: not UTF-8 text: {}", e.utf8_error())))?;
    parse_csv(&text, name)
}

/// Parse the CSV text: each line is 64 integers in 0..=16 and a label in 0..=9.
pub fn parse_csv(text: &str, name: &str) -> Result<Digits> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (line_no, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != NUM_PIXELS + 1 {
            return Err(Error::format(
                "digits",
                format!(
                    "{name} line {}: {} fields, expected {} (64 pixels and a label)",
                    line_no + 1,
                    fields.len(),
                    NUM_PIXELS + 1
                ),
            ));
        }
        for f in &fields[..NUM_PIXELS] {
            let v: f32 = f
                .parse()
                .map_err(|_| Error::format("digits", format!("{name} line {}: pixel {f:?} is not a number", line_no + 1)))?;
            if !(0.0..=16.0).contains(&v) {
                return Err(Error::format("digits", format!("{name} line {}: pixel {v} outside 0..=16", line_no + 1)));
            }
            pixels.push(v / 16.0);
        }
        let label: i64 = fields[NUM_PIXELS].parse().map_err(|_| {
            Error::format(
                "digits",
                format!("{name} line {}: label {:?} is not an integer", line_no + 1, fields[NUM_PIXELS]),
            )
        })?;
        if !(0..NUM_CLASSES as i64).contains(&label) {
            return Err(Error::format("digits", format!("{name} line {}: label {label} outside 0..=9", line_no + 1)));
        }
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(Error::format("digits", format!("{name}: no rows")));
    }
    Ok(Digits { pixels, labels })
}

/// The fixed stratified split: within each class, every fifth example (in file
/// order) is held out for test, so both parts keep the class proportions.
/// Returns (train indices, test indices).
pub fn stratified_split(labels: &[i64]) -> (Vec<usize>, Vec<usize>) {
    let mut seen = [0usize; NUM_CLASSES];
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, &l) in labels.iter().enumerate() {
        let class = l.clamp(0, NUM_CLASSES as i64 - 1) as usize;
        if seen[class] % 5 == 4 {
            test.push(i);
        } else {
            train.push(i);
        }
        seen[class] += 1;
    }
    (train, test)
}

/// Train and test parts of the embedded digits.
pub fn load_split() -> Result<(Digits, Digits)> {
    let all = load()?;
    let (train, test) = stratified_split(&all.labels);
    Ok((all.subset(&train), all.subset(&test)))
}

/// Train and test parts of the embedded digits as image data sets `[N, 1, 8, 8]`
/// (the same fixed stratified split as [`load_split`]).
pub fn load_images() -> Result<(ImageDataset, ImageDataset)> {
    let (train, test) = load_split()?;
    Ok((train.to_image_dataset("digits train")?, test.to_image_dataset("digits test")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn embedded_digits_load_and_split() {
        let d = load().unwrap();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.pixels.len(), 1797 * 64);
        assert_eq!(d.labels[0], 0);
        let (train, test) = load_split().unwrap();
        assert_eq!(train.len() + test.len(), 1797);
        let (itrain, itest) = load_images().unwrap();
        assert_eq!((itrain.len(), itest.len()), (train.len(), test.len()));
        assert_eq!(itrain.shape, (1, 8, 8));
        assert_eq!(itest.images, test.pixels);
        assert!((355..=365).contains(&test.len()), "{}", test.len());
        for c in 0..10 {
            let n = test.labels.iter().filter(|&&l| l == c).count();
            assert!((33..=38).contains(&n), "class {c}: {n}");
        }
    }
    #[test]
    fn corrupt_files_are_errors() {
        assert!(parse_gz(b"not gzip", "x").unwrap_err().to_string().contains("gzip"));
        assert!(parse_gz(&DIGITS_CSV_GZ[..DIGITS_CSV_GZ.len() / 2], "half").is_err());
        assert!(parse_csv("1,2,3\n", "x").unwrap_err().to_string().contains("3 fields"));
        let row = format!("{}17,0\n", "0,".repeat(63));
        assert!(parse_csv(&row, "x").unwrap_err().to_string().contains("outside"));
        let row = format!("{}0,12\n", "0,".repeat(63));
        assert!(parse_csv(&row, "x").unwrap_err().to_string().contains("label 12"));
    }
}
