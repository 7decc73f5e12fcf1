//! The same tensors and metadata always give the same file bytes (the
//! header's key order is fixed), so two runs with one seed write identical
//! checkpoints.

use std::collections::BTreeMap;
use tamer::{checkpoint, DType, Tensor};

#[test]
fn serializing_twice_gives_identical_bytes() {
    let tensors: Vec<(String, Tensor)> = (0..12)
        .map(|i| (format!("layer.{i}.weight"), Tensor::randn([3, 2], DType::F32, &mut tamer::rng(i)).unwrap()))
        .collect();
    let metadata: BTreeMap<String, String> = (0..24).map(|i| (format!("key{i}"), format!("value {i}"))).collect();
    let first = checkpoint::serialize(&tensors, &metadata).unwrap();
    for _ in 0..8 {
        assert!(
            checkpoint::serialize(&tensors, &metadata).unwrap() == first,
            "the bytes differ between two serializations"
        );
    }
    // And they read back as written, in the given order.
    let back = checkpoint::deserialize(&first, "mem").unwrap();
    assert_eq!(back.metadata, metadata);
    assert_eq!(back.len(), tensors.len());
    for (name, t) in &tensors {
        assert_eq!(back.get(name).unwrap().to_vec::<f32>().unwrap(), t.to_vec::<f32>().unwrap());
    }
}
