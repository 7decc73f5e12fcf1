//! Lookup table of learned vectors.

use super::{init, Module, Param};
use crate::{DType, Error, Result, Tensor};
use rand::Rng;

/// `torch.nn.Embedding`: row `id` of `weight` `[num_embeddings, dim]` for every id.
///
/// ```
/// use tamer::nn::Embedding;
/// use tamer::{rng, Tensor};
/// let emb = Embedding::new(10, 4, &mut rng(0)).unwrap();
/// let ids = Tensor::from_vec(vec![1i64, 2, 9, 0, 0, 3], [2, 3]).unwrap();
/// assert_eq!(emb.forward(&ids).unwrap().dims(), &[2, 3, 4]);
/// assert!(emb.forward(&Tensor::from_indices(&[10])).is_err());
/// ```
#[derive(Debug)]
pub struct Embedding {
    pub weight: Param,
}

impl Embedding {
    /// An f32 table initialised N(0, 1), as PyTorch does.
    pub fn new(num_embeddings: usize, dim: usize, rng: &mut impl Rng) -> Result<Embedding> {
        if num_embeddings == 0 || dim == 0 {
            return Err(Error::shape(
                "Embedding",
                format!("num_embeddings {num_embeddings} and dim {dim} must both be positive"),
            ));
        }
        let weight = Param::new(init::fresh([num_embeddings, dim], 0.0)?);
        init::normal_(&weight, 0.0, 1.0, rng)?;
        Ok(Embedding { weight })
    }
    /// A table whose parameter is the given tensor `[num_embeddings, dim]`
    /// (a float dtype). A variable is kept as it is (see [`Param::new`]), so
    /// its gradient is found under it.
    pub fn from_tensor(weight: Tensor) -> Result<Embedding> {
        super::check_given("Embedding", &weight, None)?;
        if weight.rank() != 2 {
            return Err(Error::shape(
                "Embedding",
                format!("weight must be [num_embeddings, dim], got shape {}", weight.shape()),
            ));
        }
        Ok(Embedding { weight: Param::new(weight) })
    }
    pub fn num_embeddings(&self) -> usize {
        self.weight.dims()[0]
    }
    pub fn dim(&self) -> usize {
        self.weight.dims()[1]
    }
    /// `ids` (i64, any shape `S`) -> `[S.., dim]`. Out-of-range ids are an error naming the id.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if ids.dtype() != DType::I64 {
            return Err(Error::dtype(
                "Embedding",
                format!(
                    "ids must be i64, got {} (shape {}); table shape {:?}",
                    ids.dtype(),
                    ids.shape(),
                    self.weight.dims()
                ),
            ));
        }
        Tensor::embedding(&self.weight.tensor(), ids).map_err(|e| Error::new("Embedding", e.kind, e.message))
    }
}

impl Module for Embedding {
    fn named_params(&self) -> Vec<(String, Param)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
    fn set_training(&mut self, _training: bool) {}
}
