//! Streaming an archive over HTTP(S) to a file, hashing it on the way.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use super::digest::{Digests, StreamHasher};
use super::error::DownloadError;

/// Download `url` into `out` (created), returning the size and checksums of what arrived.
///
/// Fails on a non-2xx status and on a body shorter than its Content-Length; the caller
/// owns `out` and removes it on error (it lives in the staging directory).
pub(crate) fn download_to_file(url: &str, out: &Path) -> Result<Digests, DownloadError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        // We want the status ourselves, to report it together with the URL.
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // A stalled transfer fails after a minute without data instead of hanging forever;
        // no limit on the whole body, which may take long on a slow link.
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("incrpipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent
        .get(url)
        // The archive is already gzip; a transparent Content-Encoding would change the
        // bytes we checksum.
        .header("Accept-Encoding", "identity")
        .call()
        .map_err(|e| DownloadError::Http {
            url: url.to_string(),
            source: Box::new(e),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(DownloadError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let expected = response.body().content_length();
    let mut body = response.into_body().into_reader();

    let file = File::create(out).map_err(|e| DownloadError::io(out, e))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = StreamHasher::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let received = hasher.bytes();
                // ureq reports a short body as an I/O error; say "truncated" when we know it is.
                return Err(match expected {
                    Some(expected) if received < expected => DownloadError::Truncated {
                        url: url.to_string(),
                        expected,
                        received,
                    },
                    _ => DownloadError::HttpRead {
                        url: url.to_string(),
                        received,
                        source: e,
                    },
                });
            }
        };
        hasher.update(&buf[..n]);
        writer
            .write_all(&buf[..n])
            .map_err(|e| DownloadError::io(out, e))?;
    }
    // Belt and braces: do not rely on the client library to notice a short body.
    if let Some(expected) = expected
        && hasher.bytes() != expected
    {
        return Err(DownloadError::Truncated {
            url: url.to_string(),
            expected,
            received: hasher.bytes(),
        });
    }
    writer.flush().map_err(|e| DownloadError::io(out, e))?;
    Ok(hasher.finish())
}
