//! Datasets. For now the vendored UCI digits; MNIST, CIFAR-10 and text come
//! with the trainer.

pub mod digits;
