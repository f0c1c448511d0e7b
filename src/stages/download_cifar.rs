//! `download-cifar`: the official CIFAR-10 binary archive by URL, or a local
//! mirror (directory or archive; the `mirror` param or $INCRPIPE_CIFAR10),
//! verified file by file, written into the stage's single out directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::download::{ArchiveCheck, FetchOptions, OFFICIAL_URL, fetch_cifar10_with_env};
use crate::registry::{KindMeta, ParamDecl, StageContext, StageKind};

pub struct DownloadCifar;

const PARAMS: &[ParamDecl] = &[
    ParamDecl {
        name: "url",
        default: Some("\"https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz\""),
        help: "archive URL",
    },
    ParamDecl {
        name: "mirror",
        default: Some("\"\""),
        help: "local directory or archive to use instead of the URL (else $INCRPIPE_CIFAR10)",
    },
    ParamDecl {
        name: "archive_checksum",
        default: Some("\"auto\""),
        help: "\"auto\" (official MD5 for the official URL), \"skip\", or \"md5:HEX\" / \"sha256:HEX\"",
    },
];

impl StageKind for DownloadCifar {
    fn meta(&self) -> KindMeta {
        KindMeta {
            name: "download-cifar",
            version: 1,
            params: PARAMS,
        }
    }
    fn run(&self, ctx: &StageContext) -> anyhow::Result<()> {
        let [out] = ctx.outs.as_slice() else {
            bail!(
                "download-cifar writes exactly one out (a directory); declare outs = [\"data/cifar10\"]"
            )
        };
        let s = |k: &str| {
            ctx.params
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let archive_check = match s("archive_checksum").as_str() {
            "auto" | "" => ArchiveCheck::Auto,
            "skip" => ArchiveCheck::Skip,
            other => ArchiveCheck::Expect(
                other
                    .parse()
                    .with_context(|| format!("archive_checksum `{other}`"))?,
            ),
        };
        let url = if s("url").is_empty() {
            OFFICIAL_URL.to_string()
        } else {
            s("url")
        };
        let mirror = Some(s("mirror"))
            .filter(|m| !m.is_empty())
            .map(PathBuf::from);
        let options = FetchOptions {
            url,
            archive_check,
            mirror,
            env_mirror: None,
        };
        let report = fetch_cifar10_with_env(Path::new(out), &options)?;
        std::fs::write(
            Path::new(out).join("download.json"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        println!(
            "CIFAR-10 verified: {} files, data checksum {}",
            report.files.len(),
            report.data_checksum
        );
        Ok(())
    }
}
