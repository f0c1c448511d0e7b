//! End-to-end tests of the CIFAR-10 fetcher on the real data (../shared/data), over a real
//! HTTP server on loopback, with real archives built here. Small fake archives are used
//! only where the failure happens before the data would matter.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread;

use flate2::Compression;
use flate2::write::GzEncoder;
use incrpipe::download::{
    ArchiveCheck, ArchiveChecksum, BATCHES_DIR, DownloadError, EXPECTED_FILES, FetchOptions,
    META_FILE, MIRROR_ENV, Source, expected_data_checksum, fetch_cifar10, fetch_cifar10_with_env,
    verify_dir,
};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};
use tempfile::TempDir;

// ---------------------------------------------------------------- data and archives

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar-10-batches-bin")
}

/// Everything the official archive's `cifar-10-batches-bin/` holds that we have.
fn archive_members() -> Vec<&'static str> {
    let mut names: Vec<&str> = EXPECTED_FILES.iter().map(|f| f.name).collect();
    names.push(META_FILE);
    names
}

/// Write a .tar.gz laid out like the official one (a directory entry, a readme we must
/// skip, the data files), optionally with one byte flipped in `corrupt`.
fn write_cifar_archive(path: &Path, level: Compression, corrupt: Option<&str>) {
    let gz = GzEncoder::new(BufWriter::new(File::create(path).unwrap()), level);
    let mut tar = tar::Builder::new(gz);
    let mut dir = Header::new_gnu();
    dir.set_entry_type(EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    tar.append_data(&mut dir, format!("{BATCHES_DIR}/"), &[][..])
        .unwrap();
    append_file(
        &mut tar,
        &format!("{BATCHES_DIR}/readme.html"),
        b"<html></html>",
    );
    for name in archive_members() {
        let mut data = fs::read(data_dir().join(name)).unwrap();
        if corrupt == Some(name) {
            data[1_234_567] ^= 0x01;
        }
        append_file(&mut tar, &format!("{BATCHES_DIR}/{name}"), &data);
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    tar.append_data(&mut h, path, data).unwrap();
}

/// The real data as a .tar.gz (gzip level 1), built once and kept in Cargo's test tmp dir
/// so that repeated runs do not compress 180 MB again. Written under a temporary name
/// and renamed, so a concurrent or interrupted build never leaves a partial archive.
fn shared_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("incrpipe-cifar10-test-v1.tar.gz");
        if !path.exists() {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            write_cifar_archive(&tmp, Compression::fast(), None);
            fs::rename(&tmp, &path).unwrap();
        }
        path
    })
}

fn sha256_of(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One raw tar entry: path, type, link target, content.
type RawEntry<'a> = (&'a str, EntryType, Option<&'a str>, &'a [u8]);

/// A tiny hand-made tar.gz. Headers are written raw, because `tar::Builder` refuses the
/// hostile paths (`..`, absolute) that these archives exist to contain.
fn fake_archive(path: &Path, entries: &[RawEntry]) {
    let gz = GzEncoder::new(File::create(path).unwrap(), Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, kind, link, data) in entries {
        let mut h = Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append(&h, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

// ---------------------------------------------------------------- loopback HTTP server

enum Reply {
    /// 200 with Content-Length, body streamed from a file.
    File(PathBuf),
    /// 200 with a Content-Length larger than the body, then the connection closes.
    ShortBody { declared: u64, body: Vec<u8> },
    /// 200 without Content-Length (body ends at close), body cut short by the server.
    NoLength(Vec<u8>),
}

/// Start a minimal HTTP/1.1 server on 127.0.0.1 (port chosen by the OS), serving `routes`
/// and 404 for any other path. Returns the base URL. One thread per connection,
/// `Connection: close`; the server lives until the test process exits.
fn serve(routes: Vec<(&'static str, Reply)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes = Arc::new(routes);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let routes = Arc::clone(&routes);
            thread::spawn(move || {
                // The client may hang up early (that is what some tests provoke).
                let _ = respond(stream, &routes);
            });
        }
    });
    base
}

fn respond(mut stream: TcpStream, routes: &[(&str, Reply)]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let head = |len: Option<u64>| {
        let len = len
            .map(|n| format!("Content-Length: {n}\r\n"))
            .unwrap_or_default();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-gzip\r\n{len}Connection: close\r\n\r\n"
        )
    };
    match routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r) {
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        )?,
        Some(Reply::File(file)) => {
            let mut file = File::open(file)?;
            stream.write_all(head(Some(file.metadata()?.len())).as_bytes())?;
            std::io::copy(&mut file, &mut stream)?;
        }
        Some(Reply::ShortBody { declared, body }) => {
            stream.write_all(head(Some(*declared)).as_bytes())?;
            stream.write_all(body)?;
        }
        Some(Reply::NoLength(body)) => {
            stream.write_all(head(None).as_bytes())?;
            stream.write_all(body)?;
        }
    }
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}

// ---------------------------------------------------------------- helpers

/// A fresh parent directory; the destination is `<parent>/out`.
fn workspace() -> (TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("out");
    (parent, dest)
}

/// After a failure: no destination, and no staging directory left next to it.
fn assert_nothing_left(parent: &TempDir) {
    let left: Vec<_> = fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn url_options(url: String, archive_check: ArchiveCheck) -> FetchOptions {
    FetchOptions {
        url,
        archive_check,
        ..FetchOptions::default()
    }
}

fn mirror_options(mirror: &Path) -> FetchOptions {
    FetchOptions {
        mirror: Some(mirror.to_path_buf()),
        // A URL that would fail, to prove it is not used.
        url: "http://127.0.0.1:9/never-used".to_string(),
        ..FetchOptions::default()
    }
}

/// The output holds exactly the six data files (right sizes) and the meta file. Content
/// is re-hashed with `verify_dir` only in the HTTP test, to keep the suite quick.
fn assert_complete_output(dest: &Path) {
    let dir = dest.join(BATCHES_DIR);
    for f in EXPECTED_FILES {
        assert_eq!(
            fs::metadata(dir.join(f.name)).unwrap().len(),
            f.bytes,
            "{}",
            f.name
        );
    }
    assert_eq!(
        fs::read(dir.join(META_FILE)).unwrap(),
        fs::read(data_dir().join(META_FILE)).unwrap()
    );
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = archive_members().iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "readme.html and directories must not be extracted"
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn http_download_verifies_unpacks_and_reports() {
    let archive = shared_archive();
    let archive_sha256 = sha256_of(archive);
    let base = serve(vec![(
        "/cifar-10-binary.tar.gz",
        Reply::File(archive.into()),
    )]);
    let url = format!("{base}/cifar-10-binary.tar.gz");
    let (parent, dest) = workspace();

    let check = ArchiveCheck::Expect(ArchiveChecksum::sha256(&archive_sha256).unwrap());
    let report = fetch_cifar10(&dest, &url_options(url.clone(), check)).unwrap();

    assert_eq!(report.source, Source::Url { url });
    assert_eq!(report.dir, dest.join(BATCHES_DIR));
    let a = report.archive.as_ref().unwrap();
    assert_eq!(a.bytes, fs::metadata(archive).unwrap().len());
    assert_eq!(a.sha256, archive_sha256);
    assert!(a.verified_against.is_some());
    let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, EXPECTED_FILES.map(|f| f.name));
    for (got, want) in report.files.iter().zip(EXPECTED_FILES.iter()) {
        assert_eq!(
            (got.bytes, got.md5.as_str(), got.sha256.as_str()),
            (want.bytes, want.md5, want.sha256)
        );
    }
    assert_eq!(report.data_checksum, expected_data_checksum());
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(
        serde_json::from_str::<incrpipe::download::Cifar10Report>(&json).unwrap(),
        report
    );

    assert_complete_output(&dest);
    // Re-read what was written: it is the real data, not just what the report claims.
    assert_eq!(verify_dir(&dest.join(BATCHES_DIR)).unwrap(), report.files);
    // The downloaded archive and the staging directory are gone.
    assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);

    // A second fetch into the same place refuses to overwrite verified data.
    let err = fetch_cifar10(&dest, &mirror_options(&data_dir())).unwrap_err();
    assert!(
        matches!(err, DownloadError::DestinationExists { .. }),
        "{err}"
    );
    verify_dir(&dest.join(BATCHES_DIR)).unwrap();
}

#[test]
fn http_404_is_a_clear_error_and_leaves_nothing() {
    let base = serve(vec![]);
    let url = format!("{base}/no/such/cifar-10-binary.tar.gz");
    let (parent, dest) = workspace();
    let err = fetch_cifar10(&dest, &url_options(url.clone(), ArchiveCheck::Auto)).unwrap_err();
    match &err {
        DownloadError::HttpStatus { url: u, status } => {
            assert_eq!((u.as_str(), *status), (url.as_str(), 404));
        }
        other => panic!("expected HttpStatus, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("404") && msg.contains(&url) && msg.contains("INCRPIPE_CIFAR10"),
        "{msg}"
    );
    assert_nothing_left(&parent);
}

#[test]
fn body_shorter_than_content_length_is_truncated_and_leaves_nothing() {
    let body = vec![0x1f; 50_000];
    let base = serve(vec![(
        "/a.tar.gz",
        Reply::ShortBody {
            declared: 80_000,
            body,
        },
    )]);
    let (parent, dest) = workspace();
    let err = fetch_cifar10(
        &dest,
        &url_options(format!("{base}/a.tar.gz"), ArchiveCheck::Skip),
    )
    .unwrap_err();
    match err {
        DownloadError::Truncated {
            expected, received, ..
        } => {
            assert_eq!(expected, 80_000);
            assert!(received < expected, "received {received}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_nothing_left(&parent);
}

#[test]
fn archive_cut_short_without_content_length_is_a_corrupt_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small.tar.gz");
    // Incompressible-ish content so that the gzip stream is long enough to cut.
    let junk: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fake_archive(
        &small,
        &[(
            "cifar-10-batches-bin/junk.bin",
            EntryType::Regular,
            None,
            &junk,
        )],
    );
    let bytes = fs::read(&small).unwrap();
    let half = bytes[..bytes.len() / 2].to_vec();
    let base = serve(vec![("/a.tar.gz", Reply::NoLength(half))]);
    let (parent, dest) = workspace();
    let err = fetch_cifar10(
        &dest,
        &url_options(format!("{base}/a.tar.gz"), ArchiveCheck::Skip),
    )
    .unwrap_err();
    assert!(
        matches!(err, DownloadError::CorruptArchive { .. }),
        "{err:?}"
    );
    assert_nothing_left(&parent);
}

#[test]
fn wrong_archive_checksum_is_rejected_before_unpacking() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small.tar.gz");
    fake_archive(
        &small,
        &[(
            "cifar-10-batches-bin/batches.meta.txt",
            EntryType::Regular,
            None,
            b"cat\n",
        )],
    );
    let base = serve(vec![("/a.tar.gz", Reply::File(small.clone()))]);
    let (parent, dest) = workspace();
    let check =
        ArchiveCheck::Expect(ArchiveChecksum::md5("c32a1d4ab5d03f1284b67883e8d87530").unwrap());
    let err = fetch_cifar10(&dest, &url_options(format!("{base}/a.tar.gz"), check)).unwrap_err();
    match &err {
        DownloadError::ChecksumMismatch {
            algorithm,
            expected,
            ..
        } => {
            assert_eq!(
                (*algorithm, expected.as_str()),
                ("MD5", "c32a1d4ab5d03f1284b67883e8d87530")
            );
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert_nothing_left(&parent);
}

#[test]
fn escaping_entries_are_rejected_and_nothing_is_written_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let outside_abs = tmp.path().join("evil_abs");
    let outside_abs_str = outside_abs.to_str().unwrap().to_string();
    let meta = (
        "cifar-10-batches-bin/batches.meta.txt",
        EntryType::Regular,
        None,
        &b"cat\n"[..],
    );
    let cases: Vec<(&str, Vec<RawEntry>)> = vec![
        (
            "dotdot",
            vec![meta, ("../evil", EntryType::Regular, None, b"pwned")],
        ),
        (
            "nested-dotdot",
            vec![
                meta,
                (
                    "cifar-10-batches-bin/../../evil",
                    EntryType::Regular,
                    None,
                    b"pwned",
                ),
            ],
        ),
        (
            "absolute",
            vec![meta, (&outside_abs_str, EntryType::Regular, None, b"pwned")],
        ),
        (
            "symlink-out",
            vec![
                meta,
                (
                    "cifar-10-batches-bin/data_batch_1.bin",
                    EntryType::Symlink,
                    Some("../../evil"),
                    b"",
                ),
            ],
        ),
        (
            "symlink-abs",
            vec![(
                "cifar-10-batches-bin/x",
                EntryType::Symlink,
                Some("/etc/passwd"),
                b"",
            )],
        ),
        (
            "hardlink-out",
            vec![(
                "cifar-10-batches-bin/x",
                EntryType::Link,
                Some("../evil"),
                b"",
            )],
        ),
    ];
    for (label, entries) in cases {
        let archive = tmp.path().join(format!("{label}.tar.gz"));
        fake_archive(&archive, &entries);
        let (parent, dest) = workspace();
        let err = fetch_cifar10(&dest, &mirror_options(&archive)).unwrap_err();
        assert!(
            matches!(err, DownloadError::EscapingEntry { .. }),
            "{label}: {err:?}"
        );
        assert!(err.to_string().contains("escapes"), "{label}: {err}");
        assert_nothing_left(&parent);
        assert!(!outside_abs.exists(), "{label}");
        assert!(
            !parent.path().parent().unwrap().join("evil").exists(),
            "{label}"
        );
    }
    // The same rejection over HTTP.
    let archive = tmp.path().join("dotdot.tar.gz");
    let base = serve(vec![("/a.tar.gz", Reply::File(archive))]);
    let (parent, dest) = workspace();
    let err = fetch_cifar10(
        &dest,
        &url_options(format!("{base}/a.tar.gz"), ArchiveCheck::Skip),
    )
    .unwrap_err();
    assert!(
        matches!(err, DownloadError::EscapingEntry { .. }),
        "{err:?}"
    );
    assert_nothing_left(&parent);
}

#[test]
fn a_data_file_that_is_a_link_or_appears_twice_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("link.tar.gz");
    fake_archive(
        &link,
        &[(
            "cifar-10-batches-bin/test_batch.bin",
            EntryType::Symlink,
            Some("other.bin"),
            b"",
        )],
    );
    let (parent, dest) = workspace();
    let err = fetch_cifar10(&dest, &mirror_options(&link)).unwrap_err();
    assert!(
        matches!(err, DownloadError::UnexpectedEntryType { .. }),
        "{err:?}"
    );
    assert_nothing_left(&parent);

    let twice = tmp.path().join("twice.tar.gz");
    let meta = (
        "cifar-10-batches-bin/batches.meta.txt",
        EntryType::Regular,
        None,
        &b"cat\n"[..],
    );
    fake_archive(&twice, &[meta, meta]);
    let err = fetch_cifar10(&dest, &mirror_options(&twice)).unwrap_err();
    assert!(
        matches!(err, DownloadError::DuplicateEntry { .. }),
        "{err:?}"
    );
    assert_nothing_left(&parent);
}

#[test]
fn a_flipped_byte_fails_the_checksum_of_that_file() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("corrupt.tar.gz");
    // Stored (level 0) gzip: a full-size archive without the cost of compressing again.
    write_cifar_archive(&archive, Compression::none(), Some("data_batch_3.bin"));
    let (parent, dest) = workspace();
    let err = fetch_cifar10(&dest, &mirror_options(&archive)).unwrap_err();
    match &err {
        DownloadError::ChecksumMismatch {
            file,
            expected,
            got,
            ..
        } => {
            assert_eq!(file, "data_batch_3.bin");
            assert_eq!(expected, EXPECTED_FILES[2].sha256);
            assert_ne!(got, expected);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
    assert_nothing_left(&parent);
}

#[test]
fn local_directory_mirror_with_files_or_subdirectory() {
    // The .bin files directly in the mirror, then a mirror holding cifar-10-batches-bin/.
    for mirror in [data_dir(), data_dir().parent().unwrap().to_path_buf()] {
        let (_parent, dest) = workspace();
        let report = fetch_cifar10(&dest, &mirror_options(&mirror)).unwrap();
        assert_eq!(
            report.source,
            Source::LocalDir {
                path: mirror.clone()
            }
        );
        assert!(report.archive.is_none());
        assert_eq!(report.data_checksum, expected_data_checksum());
        assert_complete_output(&dest);
    }
}

#[test]
fn local_archive_mirror_and_its_checksum() {
    let archive = shared_archive();
    let (_parent, dest) = workspace();
    let report = fetch_cifar10(&dest, &mirror_options(archive)).unwrap();
    assert_eq!(
        report.source,
        Source::LocalArchive {
            path: archive.to_path_buf()
        }
    );
    let a = report.archive.as_ref().unwrap();
    assert_eq!(a.bytes, fs::metadata(archive).unwrap().len());
    assert_eq!(
        a.verified_against, None,
        "Auto checks nothing for a local archive"
    );
    assert_eq!(report.data_checksum, expected_data_checksum());
    assert_complete_output(&dest);

    // The same archive with the official MD5 demanded: a rebuilt archive cannot match it.
    let (parent, dest) = workspace();
    let mut options = mirror_options(archive);
    options.archive_check = ArchiveCheck::Expect(
        ArchiveChecksum::md5(incrpipe::download::OFFICIAL_ARCHIVE_MD5).unwrap(),
    );
    let err = fetch_cifar10(&dest, &options).unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::ChecksumMismatch {
                algorithm: "MD5",
                ..
            }
        ),
        "{err:?}"
    );
    assert_nothing_left(&parent);
}

#[test]
fn env_mirror_is_used_when_no_mirror_is_given() {
    // The URL answers 404, so success proves the INCRPIPE_CIFAR10 value was used.
    let base = serve(vec![]);
    let (parent, dest) = workspace();
    // The destination already exists (as a runner-made output directory would): the
    // batches directory is moved into it and the staging directory removed.
    fs::create_dir(&dest).unwrap();
    let options = FetchOptions {
        url: format!("{base}/cifar-10-binary.tar.gz"),
        env_mirror: Some(shared_archive().to_path_buf()),
        ..FetchOptions::default()
    };
    let report = fetch_cifar10(&dest, &options).unwrap();
    assert!(matches!(report.source, Source::LocalArchive { .. }));
    assert_complete_output(&dest);
    assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);

    // An explicit mirror wins over the environment's.
    let missing = dest.join("no-such-mirror");
    let (parent, dest) = workspace();
    let options = FetchOptions {
        mirror: Some(missing.clone()),
        ..options
    };
    match fetch_cifar10(&dest, &options).unwrap_err() {
        DownloadError::UnreadableMirror { path, .. } => assert_eq!(path, missing),
        other => panic!("expected UnreadableMirror, got {other:?}"),
    }
    assert_nothing_left(&parent);
}

/// Set in the child process of `the_wrapper_reads_incrpipe_cifar10`.
const CHILD_MARKER: &str = "INCRPIPE_DOWNLOAD_TEST_CHILD";

/// `fetch_cifar10_with_env` reads INCRPIPE_CIFAR10. The variable is set only in a child
/// process (this test binary again), because the environment is process-global and the
/// other tests run in parallel threads.
#[test]
fn the_wrapper_reads_incrpipe_cifar10() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        // Child: the URL would answer 404; the error must name the env's mirror instead.
        let (parent, dest) = workspace();
        let base = serve(vec![]);
        let options = url_options(format!("{base}/x.tar.gz"), ArchiveCheck::Auto);
        match fetch_cifar10_with_env(&dest, &options).unwrap_err() {
            DownloadError::UnreadableMirror { path, .. } => {
                assert_eq!(path, Path::new("/nonexistent/incrpipe-env-mirror"));
            }
            other => panic!("expected UnreadableMirror, got {other:?}"),
        }
        assert_nothing_left(&parent);
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_wrapper_reads_incrpipe_cifar10",
            "--nocapture",
        ])
        .env(CHILD_MARKER, "1")
        .env(MIRROR_ENV, "/nonexistent/incrpipe-env-mirror")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn incomplete_or_unreadable_mirrors_are_clear_errors() {
    // A directory with five of the six files (links to the real ones; data_batch_1 missing).
    let mirror = tempfile::tempdir().unwrap();
    for f in &EXPECTED_FILES[1..] {
        std::os::unix::fs::symlink(data_dir().join(f.name), mirror.path().join(f.name)).unwrap();
    }
    let (parent, dest) = workspace();
    let err = fetch_cifar10(&dest, &mirror_options(mirror.path())).unwrap_err();
    match &err {
        DownloadError::MissingFile { file, .. } => assert_eq!(file, "data_batch_1.bin"),
        other => panic!("expected MissingFile, got {other:?}"),
    }
    assert_nothing_left(&parent);

    // An archive without the data files.
    let archive = mirror.path().join("empty.tar.gz");
    fake_archive(
        &archive,
        &[(
            "cifar-10-batches-bin/batches.meta.txt",
            EntryType::Regular,
            None,
            b"cat\n",
        )],
    );
    let err = fetch_cifar10(&dest, &mirror_options(&archive)).unwrap_err();
    assert!(matches!(err, DownloadError::MissingFile { .. }), "{err:?}");
    assert_nothing_left(&parent);

    // Not an archive at all.
    let text = mirror.path().join("notes.txt");
    fs::write(&text, "not a tarball").unwrap();
    let err = fetch_cifar10(&dest, &mirror_options(&text)).unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::CorruptArchive { .. } | DownloadError::MissingFile { .. }
        ),
        "{err:?}"
    );
    assert_nothing_left(&parent);

    // A path that does not exist.
    let err = fetch_cifar10(&dest, &mirror_options(&mirror.path().join("nope"))).unwrap_err();
    assert!(
        matches!(err, DownloadError::UnreadableMirror { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope"), "{err}");
    assert_nothing_left(&parent);
}
