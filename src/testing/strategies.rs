//! proptest strategies for shapes, broadcast-compatible shape pairs and
//! non-contiguous views of f64 tensors.

use crate::tensor::{rng, Tensor};

use crate::types::DType;
use proptest::prelude::*;
use std::ops::RangeInclusive;

/// Shapes of rank in `rank` with each dimension in `dim`.
pub fn shape(rank: RangeInclusive<usize>, dim: RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    rank.prop_flat_map(move |r| proptest::collection::vec(dim.clone(), r))
}

/// Two shapes that broadcast together: a common shape, from which each side
/// drops some leading axes and sets some axes to 1.
pub fn broadcast_pair(max_rank: usize, max_dim: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(1..=max_rank.max(1), 1..=max_dim.max(1))
        .prop_flat_map(|full| {
            let r = full.len();
            (
                Just(full),
                0..=r,
                0..=r,
                proptest::collection::vec(any::<bool>(), r),
                proptest::collection::vec(any::<bool>(), r),
            )
        })
        .prop_map(|(full, drop_a, drop_b, ones_a, ones_b)| {
            let make = |drop: usize, ones: &[bool]| -> Vec<usize> {
                full.iter()
                    .enumerate()
                    .skip(drop.min(full.len() - 1))
                    .map(|(i, &d)| if ones[i] { 1 } else { d })
                    .collect()
            };
            (make(drop_a, &ones_a), make(drop_b, &ones_b))
        })
}

/// How a test tensor's layout is arranged in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    /// Plain row-major.
    Contiguous,
    /// Stored with its axes reversed, then permuted back: all strides non-unit.
    Permuted,
    /// A slice out of a larger tensor, with an offset and a gap after each row.
    Sliced,
}

pub fn view_kind() -> impl Strategy<Value = ViewKind> {
    prop_oneof![Just(ViewKind::Contiguous), Just(ViewKind::Permuted), Just(ViewKind::Sliced)]
}

/// An f64 tensor of `dims` with values in `[-2, 2)`, laid out as `kind` says.
pub fn tensor_with(dims: &[usize], kind: ViewKind, seed: u64) -> Tensor {
    tensor_with_dtype(dims, kind, seed, DType::F64)
}

/// Like [`tensor_with`] for any float dtype: the values are drawn in f64 and
/// rounded to `dtype` before the view is taken, so the layout is the same.
pub fn tensor_with_dtype(dims: &[usize], kind: ViewKind, seed: u64, dtype: DType) -> Tensor {
    let mut r = rng(seed);
    let mut uniform = |dims: Vec<usize>| Tensor::uniform(dims, -2.0, 2.0, DType::F64, &mut r)?.to_dtype(dtype);
    let mut build = || -> crate::Result<Tensor> {
        match kind {
            ViewKind::Contiguous => uniform(dims.to_vec()),
            ViewKind::Permuted => {
                let rev: Vec<usize> = dims.iter().rev().copied().collect();
                let perm: Vec<isize> = (0..dims.len() as isize).rev().collect();
                uniform(rev)?.permute(&perm)
            }
            ViewKind::Sliced => {
                if dims.is_empty() {
                    return uniform(Vec::new());
                }
                if dims.len() == 1 {
                    // A column of a [d+1, 2] matrix: stride 2 and an offset.
                    return uniform(vec![dims[0] + 1, 2])?.narrow(0, 1, dims[0])?.narrow(1, 1, 1)?.squeeze(1);
                }
                let mut big = dims.to_vec();
                let last = big.len() - 1;
                big[last] += 2;
                big[0] += 1;
                uniform(big)?.narrow(0, 1, dims[0])?.narrow(last as isize, 1, dims[last])
            }
        }
    };
    build().expect("test tensor construction cannot fail for valid dims")
}

/// f64 tensors of the shapes `shape` produces, in every [`ViewKind`].
pub fn tensor(shape: impl Strategy<Value = Vec<usize>>) -> impl Strategy<Value = Tensor> {
    (shape, view_kind(), any::<u64>()).prop_map(|(dims, kind, seed)| tensor_with(&dims, kind, seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn views_hold_the_requested_shape_and_are_non_contiguous() {
        let p = tensor_with(&[2, 3, 4], ViewKind::Permuted, 1);
        assert_eq!(p.dims(), &[2, 3, 4]);
        assert!(!p.is_contiguous());
        let s = tensor_with(&[2, 3, 4], ViewKind::Sliced, 1);
        assert_eq!(s.dims(), &[2, 3, 4]);
        assert!(!s.is_contiguous());
        assert!(s.layout().offset() > 0);
        for dims in [vec![1], vec![4], vec![1, 1], vec![3, 1, 2]] {
            let v = tensor_with(&dims, ViewKind::Sliced, 2);
            assert_eq!(v.dims(), &dims[..]);
            assert!(v.layout().offset() > 0);
        }
        assert!(!tensor_with(&[4], ViewKind::Sliced, 3).is_contiguous());
    }
    proptest! {
        #![proptest_config(crate::testing::proptest_config(256))]
        #[test]
        fn broadcast_pairs_broadcast((a, b) in broadcast_pair(4, 5)) {
            let sa = crate::Shape::new(a);
            prop_assert!(sa.broadcast_with("t", &crate::Shape::new(b)).is_ok());
        }
    }
}
