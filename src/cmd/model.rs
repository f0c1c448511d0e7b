//! `incrpipe model NET`: print the partition, parameters and FLOPs of a network.

use incrpipe::engine::model::{NetSpec, describe::describe};
use incrpipe::engine::partition::parse_starts;

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// resnet8|resnet20|resnet32|resnet44|resnet56|resnet<6n+2>[-w<base>]|vgg16[-w<base>]
    pub net: String,
    /// Override the partition: unit indices where S1..SK start, e.g. `0,7,13`.
    #[arg(long)]
    pub partition: Option<String>,
    /// Print the spec as JSON instead.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    let mut spec = NetSpec::parse(&args.net)?;
    if let Some(p) = &args.partition {
        spec = spec.with_partition_starts(&parse_starts(p)?)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&spec)?);
    } else {
        print!("{}", describe(&spec));
    }
    Ok(())
}
