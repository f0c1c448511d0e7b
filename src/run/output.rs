//! A running stage's output as it comes: the runner reads what the stage appended to its
//! log and hands it to the progress display line by line (`run -v` shows every line; the
//! progress lines of [`protocol::is_progress_line`](crate::protocol::is_progress_line)
//! are shown without it).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

/// At most this much of a log is read per look, so that a stage that floods its log
/// cannot stall the scheduler.
const MAX_READ: u64 = 1 << 20;

pub(super) struct LogTail {
    path: PathBuf,
    /// Opened on the first look that finds the log; its offset is what has been read.
    file: Option<File>,
    partial: Vec<u8>,
}

impl LogTail {
    pub fn new(path: PathBuf) -> LogTail {
        LogTail {
            path,
            file: None,
            partial: Vec::new(),
        }
    }

    /// The complete lines appended since the last call; with `flush`, also an unfinished
    /// last line (the stage has ended).
    pub fn lines(&mut self, flush: bool) -> Vec<String> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        if let Some(f) = &mut self.file {
            let _ = f.take(MAX_READ).read_to_end(&mut self.partial);
        }
        let mut out = Vec::new();
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let rest = self.partial.split_off(nl + 1);
            let line = std::mem::replace(&mut self.partial, rest);
            out.push(text(&line[..nl]));
        }
        if flush && !self.partial.is_empty() {
            out.push(text(&std::mem::take(&mut self.partial)));
        }
        out
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\r')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hands_out_whole_lines_once_and_the_rest_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut f = File::create(&path).unwrap();
        let mut t = LogTail::new(path);
        assert!(t.lines(false).is_empty(), "nothing written yet");
        write!(f, "one\ntw").unwrap();
        assert_eq!(t.lines(false), ["one"]);
        write!(f, "o\r\nthree").unwrap();
        assert_eq!(t.lines(false), ["two"]);
        assert!(t.lines(false).is_empty(), "an unfinished line waits");
        assert_eq!(t.lines(true), ["three"]);
        assert!(t.lines(true).is_empty());
    }
}
