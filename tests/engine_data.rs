//! CIFAR-10 reading, validation, split, subsets and augmentation.

mod common;

use incrpipe::engine::EngineError;
use incrpipe::engine::augment::{self, MAX_SHIFT, Transform};
use incrpipe::engine::data::{
    self, Cifar10, DataConfig, IMAGE_BYTES, ImageSet, Normalization, RECORD_BYTES,
};
use std::path::Path;

fn fake_file(records: usize, label: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(records * RECORD_BYTES);
    for r in 0..records {
        v.push(label(r));
        v.extend((0..IMAGE_BYTES).map(|i| ((i + r) % 256) as u8));
    }
    v
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data_batch_1.bin");
    let mut bytes = fake_file(10_000, |r| (r % 10) as u8);
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&p, &bytes).unwrap();
    let e = data::read_batch_file(&p).unwrap_err();
    assert!(
        matches!(&e, EngineError::TruncatedFile { record: 9999, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("data_batch_1.bin") && msg.contains("record 9999"),
        "{msg}"
    );
}

#[test]
fn bad_label_and_wrong_count_are_errors() {
    let p = Path::new("x.bin");
    let bytes = fake_file(10_000, |r| if r == 1234 { 10 } else { 0 });
    let e = data::parse_batch(p, &bytes).unwrap_err();
    assert!(
        matches!(
            e,
            EngineError::BadLabel {
                record: 1234,
                label: 10,
                ..
            }
        ),
        "{e:?}"
    );
    let e = data::parse_batch(p, &fake_file(10, |_| 0)).unwrap_err();
    assert!(
        matches!(e, EngineError::WrongRecordCount { records: 10, .. }),
        "{e:?}"
    );
    assert!(data::read_batch_file(Path::new("/nonexistent/file.bin")).is_err());
}

fn synthetic_set(per_class: usize) -> ImageSet {
    let n = per_class * 10;
    ImageSet {
        pixels: (0..n * IMAGE_BYTES).map(|i| (i % 253) as u8).collect(),
        labels: (0..n).map(|i| ((i * 7) % 10) as u8).collect(),
    }
}

#[test]
fn stratified_split_is_seeded_and_stratified() {
    let set = synthetic_set(100);
    let (t, v) = data::stratified_split(&set, 0.1, 3);
    assert_eq!((t.len(), v.len()), (900, 100));
    for c in 0..10u8 {
        assert_eq!(v.labels.iter().filter(|&&l| l == c).count(), 10);
    }
    assert_eq!(data::stratified_split(&set, 0.1, 3).1, v);
    assert_ne!(data::stratified_split(&set, 0.1, 4).1, v);
    let sub = t.first_per_class(5).unwrap();
    assert_eq!(sub.len(), 50);
    assert!(t.first_per_class(91).is_err());
}

#[test]
fn real_cifar10_loads_and_splits() {
    let dir = common::cifar_dir();
    let cfg = DataConfig {
        train_per_class: Some(100),
        val_per_class: Some(20),
        test_per_class: Some(50),
        ..DataConfig::default()
    };
    let (all, test) = data::load_cifar10(&dir).expect("CIFAR-10 binary files");
    assert_eq!((all.len(), test.len()), (50_000, 10_000));
    let (t, v) = data::stratified_split(&all, 0.1, 0);
    assert_eq!((t.len(), v.len()), (45_000, 5_000));
    let c = Cifar10::from_sets(&all, test, &cfg).unwrap();
    assert_eq!((c.train.len(), c.val.len(), c.test.len()), (1000, 200, 500));
    // CIFAR-10 channel means are about 0.49, 0.48, 0.45.
    for (m, want) in c.norm.mean.iter().zip([0.49, 0.48, 0.45]) {
        assert!((m - want).abs() < 0.03, "{:?}", c.norm);
    }
}

#[test]
fn augmentation_shifts_within_4px_keeps_labels_and_is_deterministic() {
    let norm = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    // One bright pixel at (y0, x0) in every channel: find where it lands.
    let (y0, x0) = (13i32, 9i32);
    let mut img = vec![0u8; IMAGE_BYTES];
    for c in 0..3 {
        img[c * 1024 + (y0 * 32 + x0) as usize] = 255;
    }
    let mut seen_flip = [false; 2];
    let mut dst = vec![0f32; IMAGE_BYTES];
    for pos in 0..300 {
        let t = Transform::draw(9, 2, pos);
        assert!(t.dx.abs() <= MAX_SHIFT && t.dy.abs() <= MAX_SHIFT, "{t:?}");
        seen_flip[t.flip as usize] = true;
        augment::apply(&img, t, &norm, &mut dst);
        let at = dst[..1024]
            .iter()
            .position(|&v| v > 0.5)
            .expect("pixel kept");
        let (y, x) = ((at / 32) as i32, (at % 32) as i32);
        let x_unflipped = if t.flip { 31 - x } else { x };
        assert_eq!((y - y0, x_unflipped - x0), (t.dy, t.dx), "{t:?}");
        assert!((y - y0).abs() <= 4);
        assert_eq!(dst.iter().filter(|&&v| v > 0.5).count(), 3);
    }
    assert_eq!(seen_flip, [true, true]);

    let set = synthetic_set(3);
    let idx: Vec<usize> = (0..set.len()).rev().collect();
    let (a, la) = augment::augment_batch(&set, &idx, &norm, 1, 4, 100);
    let (b, lb) = augment::augment_batch(&set, &idx, &norm, 1, 4, 100);
    assert_eq!((&a, &la), (&b, &lb));
    let want: Vec<i32> = idx.iter().map(|&i| set.labels[i] as i32).collect();
    assert_eq!(la, want);
    let (c, _) = augment::augment_batch(&set, &idx, &norm, 1, 5, 100);
    assert_ne!(a, c);
}
