//! The loader (determinism, background = synchronous, exact resume,
//! normalisation, drop_last), augmentation properties and mixup/CutMix.

use proptest::prelude::*;
use tamer::data::augment::{crop_padded, erasing_box, hflip, random_crop, random_erase};
use tamer::data::mix::cutmix_box;
use tamer::data::{digits, mixed_cross_entropy, Augment, Batch, DataLoader, ImageDataset, LoaderConfig, LoaderState, Mixup, Normalization, RandomErasing};
use tamer::ops::nn::cross_entropy::{CrossEntropyOptions, Reduction};
use tamer::testing::proptest_config;
use tamer::{rng, Tensor};

fn toy(n: usize) -> ImageDataset {
    let images = (0..n * 3 * 4 * 4).map(|k| (k % 97) as f32 / 97.0).collect();
    let labels = (0..n).map(|i| (i % 5) as i64).collect();
    ImageDataset::new("toy", images, labels, (3, 4, 4), 5).unwrap()
}

type Flat = (Vec<f32>, Vec<i64>, Option<Vec<i64>>, f64);

fn flat(b: &Batch) -> Flat {
    (
        b.x.to_vec::<f32>().unwrap(),
        b.y.to_vec::<i64>().unwrap(),
        b.y_b.as_ref().map(|t| t.to_vec::<i64>().unwrap()),
        b.lam,
    )
}

/// `epochs` epochs of batches, flattened.
fn run(loader: &mut DataLoader, epochs: usize) -> Vec<Vec<Flat>> {
    (0..epochs).map(|_| loader.epoch().map(|b| flat(&b.unwrap())).collect()).collect()
}

fn full_config(seed: u64, prefetch: usize) -> LoaderConfig {
    LoaderConfig::train(4, seed)
        .with_augment(Augment {
            crop_padding: 1,
            hflip: true,
            erasing: Some(RandomErasing::with_p(0.7)),
        })
        .with_normalization(Normalization::FromData)
        .with_mixup(Mixup {
            cutmix_alpha: 1.0,
            ..Mixup::default()
        })
        .with_prefetch(prefetch)
}

#[test]
fn same_seed_same_batches_and_background_equals_synchronous() {
    let ds = std::sync::Arc::new(toy(10));
    let a = run(&mut DataLoader::new(ds.clone(), full_config(3, 0)).unwrap(), 3);
    let b = run(&mut DataLoader::new(ds.clone(), full_config(3, 2)).unwrap(), 3);
    let c = run(&mut DataLoader::new(ds.clone(), full_config(3, 1)).unwrap(), 3);
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a[0].len(), 3);
    // Epochs differ from each other, and another seed differs.
    assert_ne!(a[0], a[1]);
    let d = run(&mut DataLoader::new(ds, full_config(4, 1)).unwrap(), 1);
    assert_ne!(a[0], d[0]);
}

#[test]
fn shuffling_is_a_permutation_per_epoch() {
    let ds = toy(23);
    let mut loader = DataLoader::new(ds, LoaderConfig::train(5, 9)).unwrap();
    assert_eq!(loader.num_batches(), 5);
    let mut orders = vec![];
    for _ in 0..2 {
        let mut seen = vec![];
        for b in loader.epoch() {
            let b = b.unwrap();
            // Without augmentation x is the raw image: recover indices from pixel 0 of each image.
            let x = b.x.to_vec::<f32>().unwrap();
            for img in x.chunks(48) {
                seen.push(img.to_vec());
            }
        }
        assert_eq!(seen.len(), 23);
        orders.push(seen);
    }
    assert_ne!(orders[0], orders[1]);
    let mut a = orders[0].clone();
    let mut b = orders[1].clone();
    let key = |v: &Vec<f32>| v.iter().map(|x| (x * 1e6) as i64).collect::<Vec<_>>();
    a.sort_by_key(key);
    b.sort_by_key(key);
    assert_eq!(a, b);
}

#[test]
fn resume_from_saved_state_continues_exactly() {
    let ds = std::sync::Arc::new(toy(10));
    let full: Vec<Flat> = {
        let mut l = DataLoader::new(ds.clone(), full_config(11, 1)).unwrap();
        run(&mut l, 3).into_iter().flatten().collect()
    };
    // Stop after 4 batches (inside epoch 1), save, restore into a fresh loader with another seed configured.
    let mut l = DataLoader::new(ds.clone(), full_config(11, 1)).unwrap();
    let mut got = vec![];
    while got.len() < 4 {
        if let Some(b) = l.next_batch().unwrap() {
            got.push(flat(&b));
        }
    }
    let saved = l.state().to_json();
    assert_eq!(
        LoaderState::from_json(&saved).unwrap(),
        LoaderState {
            seed: 11,
            epoch: 1,
            position: 1
        }
    );
    drop(l);
    let mut r = DataLoader::new(ds, full_config(999, 2)).unwrap();
    r.set_state(LoaderState::from_json(&saved).unwrap()).unwrap();
    while got.len() < full.len() {
        if let Some(b) = r.next_batch().unwrap() {
            got.push(flat(&b));
        }
    }
    assert_eq!(got, full);
    assert!(LoaderState::from_json("{\"seed\":1}").unwrap_err().to_string().contains("epoch"));
    assert!(r
        .set_state(LoaderState {
            seed: 0,
            epoch: 0,
            position: 99
        })
        .is_err());
}

#[test]
fn drop_last_and_eval_order() {
    let ds = toy(10);
    let mut l = DataLoader::new(ds.clone(), LoaderConfig::train(4, 0).with_drop_last(true)).unwrap();
    let sizes: Vec<usize> = l.epoch().map(|b| b.unwrap().len()).collect();
    assert_eq!(sizes, vec![4, 4]);
    let mut e = DataLoader::new(ds.clone(), LoaderConfig::eval(3)).unwrap();
    let ys: Vec<i64> = e.epoch().flat_map(|b| b.unwrap().y.to_vec::<i64>().unwrap()).collect();
    assert_eq!(ys, ds.labels);
    assert!(DataLoader::new(ds.clone(), LoaderConfig::train(11, 0).with_drop_last(true))
        .err()
        .unwrap()
        .to_string()
        .contains("no batch"));
    assert!(DataLoader::new(ds, LoaderConfig::train(0, 0)).is_err());
}

#[test]
fn normalization_given_and_from_data() {
    let (train, _) = digits::load_images().unwrap();
    let (mean, std) = train.channel_stats();
    let mut l = DataLoader::new(train.clone(), LoaderConfig::eval(2000).with_normalization(Normalization::FromData)).unwrap();
    let x = l.next_batch().unwrap().unwrap().x.to_vec::<f32>().unwrap();
    let n = x.len() as f64;
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let s = (x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
    assert!(m.abs() < 1e-4 && (s - 1.0).abs() < 1e-4, "{m} {s}");
    let given = Normalization::Given {
        mean: mean.clone(),
        std: std.clone(),
    };
    let mut g = DataLoader::new(train.clone(), LoaderConfig::eval(2000).with_normalization(given)).unwrap();
    assert_eq!(g.next_batch().unwrap().unwrap().x.to_vec::<f32>().unwrap(), x);
    let bad = Normalization::Given {
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    assert!(DataLoader::new(train.clone(), LoaderConfig::eval(8).with_normalization(bad))
        .err()
        .unwrap()
        .to_string()
        .contains("3 means"));
    let zero = Normalization::Given {
        mean: vec![0.0],
        std: vec![0.0],
    };
    assert!(DataLoader::new(train, LoaderConfig::eval(8).with_normalization(zero)).is_err());
}

#[test]
fn augmented_digits_keep_shape_and_range() {
    let (train, _) = digits::load_images().unwrap();
    let cfg = LoaderConfig::train(64, 1).with_augment(Augment {
        crop_padding: 2,
        hflip: false,
        erasing: Some(RandomErasing::default()),
    });
    let mut l = DataLoader::new(train, cfg).unwrap();
    let b = l.next_batch().unwrap().unwrap();
    assert_eq!(b.x.dims(), &[64, 1, 8, 8]);
    assert!(b.x.to_vec::<f32>().unwrap().iter().all(|v| (0.0..=1.0).contains(v)));
}

fn image(c: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    (0..c * h * w)
        .map(|k| ((k as u64 * 2654435761 + seed) % 1000) as f32 / 1000.0 + 0.001)
        .collect()
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn crop_keeps_shape_and_is_a_shift(c in 1usize..4, h in 1usize..9, w in 1usize..9, pad in 0usize..4, seed in 0u64..1000) {
        let img = image(c, h, w, seed);
        let mut r = rng(seed);
        let out = random_crop(&img, (c, h, w), pad, &mut r);
        prop_assert_eq!(out.len(), img.len());
        // Every output pixel is zero (padding) or the source pixel at one common shift.
        let (top, left) = (0..=2 * pad).flat_map(|t| (0..=2 * pad).map(move |l| (t, l)))
            .find(|&(t, l)| crop_padded(&img, (c, h, w), pad, t, l) == out)
            .expect("the crop is one of the (2p+1)² windows");
        prop_assert!(top <= 2 * pad && left <= 2 * pad);
    }

    #[test]
    fn flip_twice_is_identity(c in 1usize..4, h in 1usize..9, w in 1usize..9, seed in 0u64..1000) {
        let img = image(c, h, w, seed);
        let mut x = img.clone();
        hflip(&mut x, (c, h, w));
        if w > 1 { prop_assert_ne!(&x, &img); }
        prop_assert_eq!(x[w - 1], img[0]);
        hflip(&mut x, (c, h, w));
        prop_assert_eq!(x, img);
    }

    #[test]
    fn erasing_area_within_bounds(c in 1usize..4, h in 4usize..40, w in 4usize..40, seed in 0u64..10_000) {
        let p = RandomErasing { p: 1.0, ..Default::default() };
        let mut r = rng(seed);
        if let Some((t, l, eh, ew)) = erasing_box(&p, h, w, &mut r) {
            let area = (eh * ew) as f64 / (h * w) as f64;
            // Rounding each side moves the area a little outside [0.02, 0.33].
            let slack = (eh + ew + 1) as f64 / (h * w) as f64;
            prop_assert!(area >= 0.02 - slack && area <= 0.33 + slack, "area {} of {}x{}", area, h, w);
            prop_assert!(t + eh <= h && l + ew <= w && eh < h && ew < w);
        }
        let img = image(c, h, w, seed);
        let mut x = img.clone();
        let mut r = rng(seed);
        match random_erase(&mut x, (c, h, w), &p, &mut r) {
            Some((t, l, eh, ew)) => {
                let zeros = x.iter().filter(|&&v| v == 0.0).count();
                prop_assert_eq!(zeros, c * eh * ew);
                for ch in 0..c { for y in 0..h { for xx in 0..w {
                    let i = (ch * h + y) * w + xx;
                    let inside = y >= t && y < t + eh && xx >= l && xx < l + ew;
                    prop_assert_eq!(x[i], if inside { 0.0 } else { img[i] });
                }}}
            }
            None => prop_assert_eq!(x, img),
        }
    }

    #[test]
    fn mixup_lam_in_unit_interval_and_mix_is_convex(alpha in 0.1f64..3.0, b in 1usize..6, seed in 0u64..1000, cut in any::<bool>()) {
        let (c, h, w) = (2, 5, 6);
        let x0 = image(b * c, h, w, seed);
        let y: Vec<i64> = (0..b as i64).collect();
        let m = if cut { Mixup::cutmix(alpha) } else { Mixup::mixup(alpha) };
        let mut x = x0.clone();
        let info = m.apply_host(&mut x, (b, c, h, w), &y, &mut rng(seed)).unwrap();
        prop_assert!((0.0..=1.0).contains(&info.lam));
        prop_assert_eq!(&info.y_b, &y.iter().rev().copied().collect::<Vec<_>>());
        let per = c * h * w;
        if let Some((top, bottom, left, right)) = info.cutmix_box {
            prop_assert!((info.lam - (1.0 - ((bottom - top) * (right - left)) as f64 / (h * w) as f64)).abs() < 1e-12);
            for i in 0..b {
                let j = b - 1 - i;
                for k in 0..per {
                    let (row, col) = ((k / w) % h, k % w);
                    let inside = row >= top && row < bottom && col >= left && col < right;
                    prop_assert_eq!(x[i * per + k], if inside { x0[j * per + k] } else { x0[i * per + k] });
                }
            }
        } else {
            for i in 0..b {
                let j = b - 1 - i;
                for k in 0..per {
                    let want = x0[i * per + k] * info.lam as f32 + x0[j * per + k] * (1.0 - info.lam) as f32;
                    prop_assert!((x[i * per + k] - want).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn cutmix_box_inside_image(h in 1usize..40, w in 1usize..40, lam in 0.0f64..1.0, seed in 0u64..1000) {
        let ((t, bo, l, r), corrected) = cutmix_box(h, w, lam, &mut rng(seed));
        prop_assert!(t <= bo && bo <= h && l <= r && r <= w);
        prop_assert!((0.0..=1.0).contains(&corrected));
    }

    #[test]
    fn mixed_loss_is_the_weighted_sum(lam in 0.0f64..=1.0, rows in 1usize..6, classes in 2usize..6, seed in 0u64..1000, ls in 0.0f64..0.3) {
        let logits = Tensor::randn([rows, classes], tamer::DType::F64, &mut rng(seed)).unwrap().variable();
        let ya = Tensor::from_vec((0..rows).map(|i| (i % classes) as i64).collect::<Vec<_>>(), [rows]).unwrap();
        let yb = Tensor::from_vec((0..rows).map(|i| ((i * 7 + 1) % classes) as i64).collect::<Vec<_>>(), [rows]).unwrap();
        let o = CrossEntropyOptions::default().with_label_smoothing(ls);
        let mixed = mixed_cross_entropy(&logits, &ya, &yb, lam, o).unwrap();
        let a = logits.cross_entropy(&ya, o).unwrap().to_scalar().unwrap();
        let bl = logits.cross_entropy(&yb, o).unwrap().to_scalar().unwrap();
        prop_assert!((mixed.to_scalar().unwrap() - (lam * a + (1.0 - lam) * bl)).abs() < 1e-10);
        // The gradient is the same weighted sum: softmax − (lam·q_a + (1 − lam)·q_b), over rows.
        let g = mixed.backward().unwrap().get(&logits).unwrap().to_vec::<f64>().unwrap();
        let ga = logits.cross_entropy(&ya, o).unwrap().backward().unwrap().get(&logits).unwrap().to_vec::<f64>().unwrap();
        let gb = logits.cross_entropy(&yb, o).unwrap().backward().unwrap().get(&logits).unwrap().to_vec::<f64>().unwrap();
        for k in 0..g.len() {
            prop_assert!((g[k] - (lam * ga[k] + (1.0 - lam) * gb[k])).abs() < 1e-10);
        }
        // Per-row losses too.
        let per = mixed_cross_entropy(&logits, &ya, &yb, lam, o.with_reduction(Reduction::None)).unwrap();
        prop_assert_eq!(per.dims(), &[rows]);
    }
}

#[test]
fn mixup_tensor_api_and_errors() {
    let x = Tensor::from_vec(vec![1.0f32, 1.0, 0.0, 0.0], [2, 1, 1, 2]).unwrap();
    let y = Tensor::from_vec(vec![0i64, 1], [2]).unwrap();
    let m = Mixup::mixup(0.4).apply(&x, &y, &mut rng(1)).unwrap();
    assert_eq!(m.y_b.to_vec::<i64>().unwrap(), vec![1, 0]);
    let v = m.x.to_vec::<f32>().unwrap();
    assert!((v[0] - m.lam as f32).abs() < 1e-6 && (v[2] - (1.0 - m.lam) as f32).abs() < 1e-6);
    // prob 0: never mixed.
    let none = Mixup { prob: 0.0, ..Mixup::default() }.apply(&x, &y, &mut rng(1)).unwrap();
    assert_eq!(none.lam, 1.0);
    assert_eq!(none.x.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    assert!(Mixup::mixup(-1.0).apply(&x, &y, &mut rng(1)).unwrap_err().to_string().contains("mixup_alpha"));
    assert!(Mixup::mixup(1.0).apply(&y, &y, &mut rng(1)).is_err());
    let logits = Tensor::zeros([2, 2], tamer::DType::F32).unwrap();
    assert!(mixed_cross_entropy(&logits, &y, &y, 1.5, CrossEntropyOptions::default()).is_err());
    // A mixed batch's loss method uses both targets.
    let mut l = DataLoader::new(toy(6), LoaderConfig::train(6, 2).with_mixup(Mixup::mixup(1.0))).unwrap();
    let b = l.next_batch().unwrap().unwrap();
    let logits = Tensor::randn([6, 5], tamer::DType::F32, &mut rng(0)).unwrap();
    let o = CrossEntropyOptions::default();
    let want = mixed_cross_entropy(&logits, &b.y, b.y_b.as_ref().unwrap(), b.lam, o)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(b.loss(&logits, o).unwrap().to_scalar().unwrap(), want);
}

#[test]
fn shards_split_every_epoch_evenly_and_together_make_the_larger_batches() {
    // 11 examples over 2 ranks: 5 each, one left out; batches of 2 per rank
    // are the larger loader's batches of 4, epoch after epoch.
    let labels = |b: &Batch| b.y.to_vec::<i64>().unwrap();
    // Each example's label is its index, so batches can be compared by label.
    let ids = |n: usize| ImageDataset::new("ids", vec![0.5; n], (0..n as i64).collect(), (1, 1, 1), n).unwrap();
    let mut whole = DataLoader::new(ids(11), LoaderConfig::train(4, 9).with_prefetch(0)).unwrap();
    let mut ranks: Vec<DataLoader> = (0..2)
        .map(|r| {
            let mut l = DataLoader::new(ids(11), LoaderConfig::train(2, 9).with_prefetch(r)).unwrap();
            l.shard(r, 2).unwrap();
            l
        })
        .collect();
    assert_eq!(ranks[0].num_batches(), 3);
    assert_eq!(ranks[1].num_batches(), 3);
    for epoch in 0..3 {
        let big: Vec<Vec<i64>> = whole.epoch().map(|b| labels(&b.unwrap())).collect();
        let mine: Vec<Vec<Vec<i64>>> = ranks.iter_mut().map(|l| l.epoch().map(|b| labels(&b.unwrap())).collect()).collect();
        assert_eq!(mine[0].len(), 3, "epoch {epoch}");
        let seen: Vec<i64> = mine.iter().flatten().flatten().copied().collect();
        assert_eq!(seen.len(), 10);
        let mut distinct = seen.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 10, "no example twice in an epoch: {seen:?}");
        // Batches 0 and 1 (of 4) are whole; the ranks' last batches of 1
        // are the first two examples of the larger loader's last batch of 3.
        for i in 0..3 {
            let mut union: Vec<i64> = mine[0][i].iter().chain(&mine[1][i]).copied().collect();
            let mut expected = big[i][..union.len()].to_vec();
            union.sort();
            expected.sort();
            assert_eq!(union, expected, "epoch {epoch} batch {i}");
        }
    }
    assert!(ranks[0].shard(2, 2).is_err());
    let e = DataLoader::new(toy(3), LoaderConfig::train(2, 0).with_drop_last(true))
        .unwrap()
        .shard(0, 2)
        .err()
        .unwrap();
    assert!(e.message.contains("split over 2 ranks"), "{e}");
}
