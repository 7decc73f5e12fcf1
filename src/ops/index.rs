//! Indexing: index_select / embedding, gather, cat, stack, split, chunk.

/// The kernels a backend provides for indexing.
pub trait IndexKernels: Sized {}
