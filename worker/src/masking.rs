//! Masking a job's secrets in its output: every occurrence of a value (of at least
//! [`MIN_MASKED_CHARS`] characters) and of its common encodings (base64, standard and URL-safe,
//! at each of the three alignments; percent-encoding) becomes `***` before a log line or an
//! output is published, also when a line was cut into pieces at the reader's bound; and a line
//! `::add-mask::VALUE` on stdout adds a value at run time (the line is published masked).
//!
//! One Aho-Corasick automaton finds every pattern in one pass. Across the pieces of a long line
//! it keeps a carry-over window of the longest pattern's length less one byte: a piece is
//! published without its last bytes, which go in front of the next piece. It does not read
//! pipes or batch lines (`lines`, `execute` do), and it never logs a value.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use runway_broker::protocol::{LogLine, Stream};

/// Shorter values are not masked: masking `a` or `on` would garble every line.
pub(crate) const MIN_MASKED_CHARS: usize = 4;

/// What a value is replaced with.
const MASK: &[u8] = b"***";

/// The stdout line that adds a value to mask.
const ADD_MASK: &str = "::add-mask::";

/// URL encoding leaves RFC 3986's unreserved characters alone and encodes the rest.
const URL_ENCODED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The masker of one job: its patterns, and for each stream the bytes held back from the last
/// piece of an unfinished line.
#[derive(Debug, Default)]
pub(crate) struct Masker {
    patterns: Vec<Vec<u8>>,
    /// `None` while there is nothing to mask.
    automaton: Option<AhoCorasick>,
    longest: usize,
    /// Indexed by [`stream_index`].
    carry: [Vec<u8>; 2],
}

impl Masker {
    /// A masker for `values` (the job's secrets).
    pub(crate) fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut masker = Masker::default();
        for value in values {
            masker.add_patterns(value);
        }
        masker.build();
        masker
    }

    /// Mask `value` from now on, with its encodings.
    pub(crate) fn add(&mut self, value: &str) {
        if self.add_patterns(value) {
            self.build();
        }
    }

    /// Add the patterns of `value`; whether any were new.
    fn add_patterns(&mut self, value: &str) -> bool {
        let before = self.patterns.len();
        let push = |pattern: Vec<u8>, patterns: &mut Vec<Vec<u8>>| {
            if String::from_utf8_lossy(&pattern).chars().count() >= MIN_MASKED_CHARS && !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        };
        if value.chars().count() < MIN_MASKED_CHARS {
            return false;
        }
        // Output is masked line by line, so a value of several lines is masked line by line.
        for line in value.lines() {
            push(line.as_bytes().to_vec(), &mut self.patterns);
        }
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            for offset in 0..3 {
                push(base64_core(engine, value.as_bytes(), offset), &mut self.patterns);
            }
        }
        // The value encoded alone, edge characters and padding included (the longest match wins).
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            push(engine.encode(value).into_bytes(), &mut self.patterns);
        }
        let encoded = utf8_percent_encode(value, URL_ENCODED).to_string();
        if encoded != value {
            push(lowercase_escapes(&encoded).into_bytes(), &mut self.patterns);
            push(encoded.into_bytes(), &mut self.patterns);
        }
        self.patterns.len() > before
    }

    fn build(&mut self) {
        self.longest = self.patterns.iter().map(Vec::len).max().unwrap_or(0);
        self.automaton = if self.patterns.is_empty() {
            None
        } else {
            // Only a pattern set beyond the automaton's size limits fails; then mask nothing
            // rather than stop the job, and say so (without the values).
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&self.patterns)
                .inspect_err(|err| tracing::warn!(error = %err, "cannot build the masking automaton"))
                .ok()
        };
    }

    /// Mask a whole text (an output's value).
    pub(crate) fn mask_text(&self, text: &str) -> String {
        match &self.automaton {
            Some(automaton) if automaton.is_match(text) => {
                String::from_utf8_lossy(&replace_up_to(automaton, text.as_bytes(), text.len()).0).into_owned()
            }
            _ => text.to_owned(),
        }
    }

    /// Mask one read's lines, taking `::add-mask::` lines into account first. A piece of an
    /// unfinished line may come out shorter (its tail waits for the next piece), or not at all.
    pub(crate) fn mask_lines(&mut self, lines: Vec<LogLine>) -> Vec<LogLine> {
        let mut masked = Vec::with_capacity(lines.len());
        for line in lines {
            let index = stream_index(line.s);
            if !line.p && !line.b64 && self.carry[index].is_empty() {
                if line.s == Stream::Stdout
                    && let Some(value) = line.l.strip_prefix(ADD_MASK)
                {
                    self.add(value.trim());
                }
                // The common case: a whole line with nothing to mask is published as it is.
                match &self.automaton {
                    Some(automaton) if automaton.is_match(&line.l) => {}
                    _ => {
                        masked.push(line);
                        continue;
                    }
                }
            }
            let mut data = std::mem::take(&mut self.carry[index]);
            data.extend_from_slice(&line_bytes(&line));
            let Some(automaton) = &self.automaton else {
                masked.push(LogLine::from_bytes(line.s, line.t, &data, line.p));
                continue;
            };
            let end = if line.p { carry_start(&data, self.longest) } else { data.len() };
            let (out, consumed) = replace_up_to(automaton, &data, end);
            self.carry[index] = data[consumed..].to_vec();
            if !out.is_empty() || !line.p {
                masked.push(LogLine::from_bytes(line.s, line.t, &out, line.p));
            }
        }
        masked
    }

    /// The bytes still held back when the output ended, masked, as partial lines.
    pub(crate) fn finish(&mut self, t: u64) -> Vec<LogLine> {
        let mut lines = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let data = std::mem::take(&mut self.carry[stream_index(stream)]);
            if data.is_empty() {
                continue;
            }
            let out = match &self.automaton {
                Some(automaton) => replace_up_to(automaton, &data, data.len()).0,
                None => data,
            };
            lines.push(LogLine::from_bytes(stream, t, &out, true));
        }
        lines
    }
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// A line's bytes, decoded from base64 when it was not UTF-8.
fn line_bytes(line: &LogLine) -> Vec<u8> {
    if line.b64 {
        // The runner made this base64 itself, so it decodes; if not, mask the text as is.
        base64::engine::general_purpose::STANDARD.decode(&line.l).unwrap_or_else(|_| line.l.as_bytes().to_vec())
    } else {
        line.l.as_bytes().to_vec()
    }
}

/// Where the held-back window of an unfinished piece starts: a pattern starting before it lies
/// wholly in `data`, so it is found now; one starting at or after it may go on in the next
/// piece. Moved back to a character boundary, so a piece does not end inside a character.
fn carry_start(data: &[u8], longest: usize) -> usize {
    let mut start = data.len().saturating_sub(longest.saturating_sub(1));
    while start > 0 && start < data.len() && data[start] & 0b1100_0000 == 0b1000_0000 {
        start -= 1;
    }
    start
}

/// Mask every match that starts before `end`; the masked bytes, and how far into `data` they
/// reach (`end`, or the end of a match that runs past it).
fn replace_up_to(automaton: &AhoCorasick, data: &[u8], end: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(end);
    let mut last = 0;
    for found in automaton.find_iter(data) {
        if found.start() >= end {
            break;
        }
        out.extend_from_slice(&data[last..found.start()]);
        out.extend_from_slice(MASK);
        last = found.end();
    }
    let reach = end.max(last);
    out.extend_from_slice(&data[last..reach]);
    (out, reach)
}

/// The base64 characters of `value` that do not depend on its neighbours, when it starts
/// `offset` bytes into a 3-byte group of a longer encoded text.
fn base64_core(engine: &base64::engine::GeneralPurpose, value: &[u8], offset: usize) -> Vec<u8> {
    let mut aligned = vec![0u8; offset];
    aligned.extend_from_slice(value);
    let encoded = engine.encode(&aligned).into_bytes();
    // Character i holds bits 6i..6i+6; the value's bits are 8*offset..8*(offset+len).
    let start = (8 * offset).div_ceil(6);
    let end = (8 * (offset + value.len())) / 6;
    encoded.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
}

/// `%2F` as `%2f`: both spellings are URL encoding.
fn lowercase_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(text: &str) -> LogLine {
        LogLine::from_bytes(Stream::Stdout, 0, text.as_bytes(), false)
    }

    fn piece(text: &str) -> LogLine {
        LogLine::from_bytes(Stream::Stdout, 0, text.as_bytes(), true)
    }

    /// Mask `lines`, then what was held back; the published text, pieces joined.
    fn published(masker: &mut Masker, lines: Vec<LogLine>) -> String {
        let mut lines = masker.mask_lines(lines);
        lines.extend(masker.finish(0));
        lines.iter().map(|line| if line.p { line.l.clone() } else { format!("{}\n", line.l) }).collect()
    }

    #[test]
    fn values_are_masked_and_short_ones_are_not() {
        let mut masker = Masker::new(["hunter2", "abc"]);
        assert_eq!(published(&mut masker, vec![out("pw=hunter2 x=abc hunter2")]), "pw=*** x=abc ***\n");
    }

    #[test]
    fn a_value_split_across_pieces_of_a_long_line_is_masked() {
        let secret = "s3cr3t-t0ken";
        for cut in 1..secret.len() {
            let mut masker = Masker::new([secret]);
            let (head, tail) = secret.split_at(cut);
            let lines = vec![piece(&format!("xx{head}")), piece(&format!("{tail}yy")), out("end")];
            assert_eq!(published(&mut masker, lines), "xx***yyend\n", "cut at {cut}");
        }
    }

    #[test]
    fn a_value_split_across_many_small_pieces_is_masked() {
        let mut masker = Masker::new(["0123456789"]);
        let lines = "a0123456789b".chars().map(|c| piece(&c.to_string())).collect();
        assert_eq!(published(&mut masker, lines), "a***b");
    }

    #[test]
    fn base64_at_every_alignment_and_both_alphabets_is_masked() {
        // `?>` and `~` make `+`/`/` in standard base64 and `-`/`_` in the URL-safe one.
        let secret = "t0k~n?>?>value";
        for prefix in ["", "a", "ab"] {
            let text = format!("{prefix}{secret}!");
            for encoded in [STANDARD.encode(&text), URL_SAFE.encode(&text)] {
                let mut masker = Masker::new([secret]);
                let masked = published(&mut masker, vec![out(&encoded)]);
                assert!(masked.contains("***"), "{encoded} -> {masked}");
                assert!(masked.len() <= 3 + 3 + 4 + 1, "at most the edge characters remain: {masked}");
            }
        }
    }

    #[test]
    fn a_value_encoded_alone_is_masked_whole() {
        let mut masker = Masker::new(["tok/en+from?the=file"]);
        let line = format!("{} {}", STANDARD.encode("tok/en+from?the=file"), URL_SAFE.encode("tok/en+from?the=file"));
        assert_eq!(published(&mut masker, vec![out(&line)]), "*** ***\n");
    }

    #[test]
    fn url_encoding_is_masked_in_both_cases() {
        let secret = "p@ss/w rd";
        let mut masker = Masker::new([secret]);
        let lines = vec![out("u=p%40ss%2Fw%20rd"), out("u=p%40ss%2fw%20rd")];
        assert_eq!(published(&mut masker, lines), "u=***\nu=***\n");
    }

    #[test]
    fn add_mask_masks_later_lines_and_its_own() {
        let mut masker = Masker::new([]);
        let lines = vec![out("before l0calvalue"), out("::add-mask::l0calvalue"), out("after l0calvalue")];
        assert_eq!(published(&mut masker, lines), "before l0calvalue\n::add-mask::***\nafter ***\n");
        assert_eq!(masker.mask_text("v=l0calvalue"), "v=***");
    }

    #[test]
    fn add_mask_on_stderr_is_just_a_line() {
        let mut masker = Masker::new([]);
        let line = LogLine::from_bytes(Stream::Stderr, 0, b"::add-mask::l0calvalue", false);
        masker.mask_lines(vec![line]);
        assert_eq!(masker.mask_text("l0calvalue"), "l0calvalue");
    }

    #[test]
    fn streams_carry_apart_and_lines_without_secrets_pass_unchanged() {
        let mut masker = Masker::new(["abcdefgh"]);
        let err = |text: &str| LogLine::from_bytes(Stream::Stderr, 0, text.as_bytes(), true);
        let mut lines = masker.mask_lines(vec![piece("1abcd"), err("2abcd"), piece("efgh1"), err("efgh2")]);
        lines.extend(masker.finish(0));
        let text = |stream| -> String { lines.iter().filter(|l| l.s == stream).map(|l| l.l.as_str()).collect() };
        assert_eq!(text(Stream::Stdout), "1***1");
        assert_eq!(text(Stream::Stderr), "2***2");
        assert_eq!(masker.mask_lines(vec![out("plain")]), vec![out("plain")]);
    }

    #[test]
    fn a_held_back_window_does_not_cut_a_character() {
        let mut masker = Masker::new(["zzzzzz"]);
        let lines = masker.mask_lines(vec![piece("ééééé")]);
        assert!(lines.iter().all(|line| !line.b64), "{lines:?}");
    }
}
