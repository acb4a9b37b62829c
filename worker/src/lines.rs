//! Reading a pipe as lines: each read is split at newlines and stamped; a line longer than the
//! bound is cut into pieces marked partial, so no line is ever buffered whole.
//!
//! It does not batch or publish; it hands each read's lines to a channel whose capacity is the
//! back-pressure: when the publisher falls behind, reading stops and the child blocks on its pipe.

use runway_broker::protocol::{LogLine, Stream, now_ms};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// The lines of one read of one pipe.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) bytes: usize,
}

/// Read `pipe` to its end, sending lines of at most `max_line` bytes.
pub(crate) async fn read_lines(
    stream: Stream,
    mut pipe: impl AsyncRead + Unpin,
    max_line: usize,
    tx: mpsc::Sender<Chunk>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; max_line.max(1)];
    let mut filled = 0;
    loop {
        let read = pipe.read(&mut buf[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
        let t = now_ms();
        let (lines, consumed) = split_lines(stream, t, &buf[..filled], filled == buf.len());
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if !lines.is_empty() && tx.send(Chunk { lines, bytes: consumed }).await.is_err() {
            return Ok(());
        }
    }
    if filled > 0 {
        // The output ended without a newline: keep the bytes, mark the missing newline.
        let line = LogLine::from_bytes(stream, now_ms(), &buf[..filled], true);
        let _ = tx.send(Chunk { lines: vec![line], bytes: filled }).await;
    }
    Ok(())
}

/// Split complete lines off the front of `data`; when `full` and no newline is found, the whole
/// buffer becomes one partial piece. Returns the lines and how many bytes they consumed.
pub(crate) fn split_lines(stream: Stream, t: u64, data: &[u8], full: bool) -> (Vec<LogLine>, usize) {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', data) {
        lines.push(LogLine::from_bytes(stream, t, &data[start..end], false));
        start = end + 1;
    }
    if start == 0 && full && !data.is_empty() {
        lines.push(LogLine::from_bytes(stream, t, data, true));
        start = data.len();
    }
    (lines, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<(&str, bool)> {
        lines.iter().map(|line| (line.l.as_str(), line.p)).collect()
    }

    #[test]
    fn splits_complete_lines_and_keeps_the_rest() {
        let (lines, used) = split_lines(Stream::Stdout, 0, b"a\nbb\ncc", false);
        assert_eq!(texts(&lines), [("a", false), ("bb", false)]);
        assert_eq!(used, 5);
    }

    #[test]
    fn a_full_buffer_without_newline_is_a_partial_piece() {
        let (lines, used) = split_lines(Stream::Stderr, 0, b"abcd", true);
        assert_eq!(texts(&lines), [("abcd", true)]);
        assert_eq!(used, 4);
    }

    #[test]
    fn empty_lines_are_lines() {
        let (lines, used) = split_lines(Stream::Stdout, 0, b"\n\n", false);
        assert_eq!(texts(&lines), [("", false), ("", false)]);
        assert_eq!(used, 2);
    }

    #[tokio::test]
    async fn long_lines_are_cut_at_the_bound_and_reassemble() {
        let mut input = vec![b'x'; 10];
        input.extend_from_slice(b"\nshort\nend");
        let (tx, mut rx) = mpsc::channel(100);
        read_lines(Stream::Stdout, &input[..], 4, tx).await.expect("read");
        let mut out = Vec::new();
        let mut max_piece = 0;
        while let Some(chunk) = rx.recv().await {
            for line in chunk.lines {
                max_piece = max_piece.max(line.l.len());
                out.extend_from_slice(line.l.as_bytes());
                if !line.p {
                    out.push(b'\n');
                }
            }
        }
        assert_eq!(out, input, "pieces reassemble to the exact input");
        assert!(max_piece <= 4, "no piece is longer than the bound");
    }
}
