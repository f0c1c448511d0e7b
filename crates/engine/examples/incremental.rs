//! Incremental training of a narrow ResNet-8 with look-ahead initialisation on a small
//! CIFAR-10 subset. Run: `cargo run -p incrpipe-engine --example incremental -- DIR`,
//! DIR holding CIFAR-10's binary files (`data_batch_1.bin`, ...).
use incrpipe_engine::backend::{CpuTrainBackend, cpu_device};
use incrpipe_engine::data::Cifar10;
use incrpipe_engine::settings::RunSettings;
use incrpipe_engine::train::{self, Ctx};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: incremental CIFAR10_DIR")?;
    let mut s = RunSettings::defaults("resnet8-w4", "lookahead");
    (s.train_per_class, s.val_per_class, s.test_per_class) = (50, 10, 20);
    (s.batch, s.lr, s.min_epochs, s.max_epochs) = (32, 1e-3, 1, 1);
    (s.lookahead_epochs, s.epoch_budget) = (1, 6);
    let run = s.build()?;
    let data = Cifar10::load(std::path::Path::new(&dir), &run.data)?;
    let ctx = Ctx {
        spec: &run.spec,
        data: &data,
        cfg: &run.train,
    };
    let r = train::run::<CpuTrainBackend>(ctx, None, &cpu_device())?;
    for p in &r.state.progress.phases {
        println!(
            "{:?} S1..S{}: {} epochs, {:?}",
            p.kind, p.active, p.epochs, p.stop
        );
    }
    println!("test accuracy {:.3}", r.test_acc);
    Ok(())
}
