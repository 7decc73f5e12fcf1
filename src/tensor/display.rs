//! `Display`: shape, dtype, device and a preview of the values.

use super::Tensor;
use std::fmt;

const PREVIEW: usize = 8;

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor(shape={}, dtype={}, device={}", self.shape(), self.dtype(), self.device())?;
        if self.requires_grad() {
            write!(f, ", requires_grad")?;
        }
        match self.to_f64_vec() {
            Ok(values) => {
                let shown: Vec<String> = values.iter().take(PREVIEW).map(|v| format!("{v:.4}")).collect();
                let more = if values.len() > PREVIEW {
                    format!(", ... ({} more)", values.len() - PREVIEW)
                } else {
                    String::new()
                };
                write!(f, ", [{}{more}])", shown.join(", "))
            }
            Err(_) => write!(f, ")"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Tensor};
    #[test]
    fn display_shows_shape_dtype_and_values() {
        let t = Tensor::arange(0.0, 10.0, 1.0, DType::F32).unwrap();
        let s = t.to_string();
        assert!(
            s.contains("shape=[10]") && s.contains("dtype=f32") && s.contains("1.0000") && s.contains("2 more"),
            "{s}"
        );
    }
}
