//! Incremental framing of a SIP byte stream (TCP): [`StreamFramer`] cuts the same messages as
//! a fresh scan ([`super::frame_stream`]) but remembers how far it got, so a message that
//! arrives in many small reads costs one scan of its bytes, not one scan per read.
//!
//! Invariants:
//! - The framer is fed the stream buffer from the first byte of the current message each time;
//!   that buffer only grows between calls (more bytes appended) until the framer answers
//!   [`Frame::Complete`] or [`Frame::KeepAlive`] (the caller consumes that many bytes) or an
//!   error (the caller closes the stream). After any of these the framer is fresh again.
//! - For every prefix of a stream, the answer equals that of a fresh framer on the same prefix
//!   (checked against the former one-shot scan in the tests), so resuming never changes a cut.
//! - Work per call is O(new bytes + 1): the line-end search resumes where it stopped (at most
//!   the one LF whose next byte was missing is looked at again), each complete header line is
//!   inspected once, and the parsed Content-Length is kept. [`StreamFramer::scanned`] counts
//!   the bytes looked at, so tests can check this without a clock.
//! - Never panics: all indexing is `get`.

use memchr::memchr;

use super::error::ParseError;
use super::message::{
    Frame, MAX_HEAD_BYTES, MAX_STREAM_BODY, blank_line_at, skip_crlf, split_name,
};
use super::names::HeaderName;
use super::scan::{parse_u32, trim_range};

/// Resumable framing state of the message at the start of a stream buffer (offsets are
/// relative to that first byte, so they stay valid when the caller drops consumed bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamFramer {
    /// Offset just past the start line's LF; 0 while the start line is incomplete.
    head_start: usize,
    /// Start of the header line being framed (valid once `head_start > 0`).
    pos: usize,
    /// Where the LF search resumes.
    search: usize,
    /// Content-Length seen so far in this message.
    content_length: Option<u32>,
    /// Whole message length once the header section is complete (waiting for the body).
    total: Option<usize>,
    /// Bytes looked at since creation (a cost measure; wraps never in practice).
    scanned: u64,
}

impl StreamFramer {
    /// A framer at the start of a message.
    pub fn new() -> Self {
        StreamFramer::default()
    }

    /// Bytes examined so far, over every message framed (for cost tests and statistics).
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Whether part of a message (not keep-alive CR/LF) has been seen and it is not complete.
    pub fn in_message(&self) -> bool {
        self.search > 0 || self.total.is_some()
    }

    /// Forget the current message's progress (keeps the [`StreamFramer::scanned`] count).
    pub fn reset(&mut self) {
        *self = StreamFramer {
            scanned: self.scanned,
            ..StreamFramer::default()
        };
    }

    /// Frame the message at the start of `buf` (the same message's bytes as at the previous
    /// call, possibly with more appended). See [`super::frame_stream`] for the answers.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Frame, ParseError> {
        let r = self.step(buf);
        if !matches!(r, Ok(Frame::Partial)) {
            self.reset();
        }
        r
    }

    fn count(&mut self, n: usize) {
        self.scanned = self.scanned.saturating_add(n as u64);
    }

    fn step(&mut self, buf: &[u8]) -> Result<Frame, ParseError> {
        if let Some(total) = self.total {
            return Ok(if buf.len() >= total {
                Frame::Complete(total)
            } else {
                Frame::Partial
            });
        }
        if self.head_start == 0 {
            if self.search == 0 {
                let n = skip_crlf(buf);
                self.count(n + 1);
                if n > 0 {
                    return Ok(Frame::KeepAlive(n));
                }
                if buf.is_empty() {
                    return Ok(Frame::Partial);
                }
            }
            let from = self.search;
            let rest = buf.get(from..).unwrap_or(&[]);
            match memchr(b'\n', rest) {
                None => {
                    self.count(rest.len());
                    self.search = buf.len().max(1);
                    return partial_or_too_large(buf, 0);
                }
                Some(k) => {
                    self.count(k + 1);
                    self.head_start = from + k + 1;
                    self.pos = self.head_start;
                    self.search = self.head_start;
                }
            }
        }
        let head_start = self.head_start;
        loop {
            let pos = self.pos;
            if pos - head_start > MAX_HEAD_BYTES {
                return Err(ParseError::HeadersTooLarge);
            }
            if buf.get(pos).is_none() {
                return Ok(Frame::Partial);
            }
            if let Some(body_start) = blank_line_at(buf, pos) {
                let cl = self
                    .content_length
                    .ok_or(ParseError::MissingContentLength)?;
                if cl as usize > MAX_STREAM_BODY {
                    return Err(ParseError::BodyTooLarge);
                }
                let total = body_start
                    .checked_add(cl as usize)
                    .ok_or(ParseError::BadContentLength)?;
                self.total = Some(total);
                return Ok(if buf.len() >= total {
                    Frame::Complete(total)
                } else {
                    Frame::Partial
                });
            }
            if buf.get(pos) == Some(&b'\r') && buf.get(pos + 1).is_none() {
                return Ok(Frame::Partial);
            }
            // The end of the logical line at `pos` (folds included), resuming the search.
            let next = loop {
                let from = self.search.max(pos);
                let rest = buf.get(from..).unwrap_or(&[]);
                let Some(k) = memchr(b'\n', rest) else {
                    self.count(rest.len());
                    self.search = buf.len();
                    return partial_or_too_large(buf, head_start);
                };
                self.count(k + 1);
                let after = from + k + 1;
                match buf.get(after) {
                    Some(b' ' | b'\t') => self.search = after,
                    Some(_) => break after,
                    None => {
                        // Whether this LF ends the line depends on the next byte: look at
                        // this one LF again next time.
                        self.search = from + k;
                        return partial_or_too_large(buf, head_start);
                    }
                }
            };
            self.count(next - pos);
            let (name_end, colon) = split_name(buf, pos, next)?;
            if HeaderName::from_bytes(buf.get(pos..name_end).unwrap_or(&[]))
                == HeaderName::ContentLength
            {
                if self.content_length.is_some() {
                    return Err(ParseError::DuplicateContentLength);
                }
                let (a, b) = trim_range(buf, colon + 1, next);
                self.content_length = Some(
                    parse_u32(buf.get(a..b).unwrap_or(&[])).ok_or(ParseError::BadContentLength)?,
                );
            }
            self.pos = next;
            self.search = next;
        }
    }
}

fn partial_or_too_large(buf: &[u8], head_start: usize) -> Result<Frame, ParseError> {
    if buf.len().saturating_sub(head_start) > MAX_HEAD_BYTES {
        Err(ParseError::HeadersTooLarge)
    } else {
        Ok(Frame::Partial)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::super::message::logical_line_end;
    use super::*;

    /// The one-shot scan `frame_stream` did before the framer existed (kept as the oracle).
    fn reference(buf: &[u8]) -> Result<Frame, ParseError> {
        let n = skip_crlf(buf);
        if n > 0 {
            return Ok(Frame::KeepAlive(n));
        }
        if buf.is_empty() {
            return Ok(Frame::Partial);
        }
        let Some(nl) = memchr(b'\n', buf) else {
            return partial_or_too_large(buf, 0);
        };
        let head_start = nl + 1;
        let mut pos = head_start;
        let mut content_length: Option<u32> = None;
        loop {
            if pos - head_start > MAX_HEAD_BYTES {
                return Err(ParseError::HeadersTooLarge);
            }
            if buf.get(pos).is_none() {
                return Ok(Frame::Partial);
            }
            if let Some(body_start) = blank_line_at(buf, pos) {
                let cl = content_length.ok_or(ParseError::MissingContentLength)?;
                if cl as usize > MAX_STREAM_BODY {
                    return Err(ParseError::BodyTooLarge);
                }
                let total = body_start
                    .checked_add(cl as usize)
                    .ok_or(ParseError::BadContentLength)?;
                return Ok(if buf.len() >= total {
                    Frame::Complete(total)
                } else {
                    Frame::Partial
                });
            }
            if buf.get(pos) == Some(&b'\r') && buf.get(pos + 1).is_none() {
                return Ok(Frame::Partial);
            }
            let Some(next) = logical_line_end(buf, pos) else {
                return partial_or_too_large(buf, head_start);
            };
            let (name_end, colon) = split_name(buf, pos, next)?;
            if HeaderName::from_bytes(buf.get(pos..name_end).unwrap_or(&[]))
                == HeaderName::ContentLength
            {
                if content_length.is_some() {
                    return Err(ParseError::DuplicateContentLength);
                }
                let (a, b) = trim_range(buf, colon + 1, next);
                content_length = Some(
                    parse_u32(buf.get(a..b).unwrap_or(&[])).ok_or(ParseError::BadContentLength)?,
                );
            }
            pos = next;
        }
    }

    /// Feeds `stream` in chunks of the sizes `chunks` cycles through, consuming what the
    /// framer cuts, and checks every answer against the reference on the same bytes.
    /// Returns the framer (for its scan count) and the cuts made.
    fn feed(stream: &[u8], chunks: &[usize]) -> (StreamFramer, Vec<Frame>) {
        let mut f = StreamFramer::new();
        let mut cuts = Vec::new();
        let (mut start, mut end, mut i) = (0usize, 0usize, 0usize);
        while end < stream.len() {
            let step = chunks.get(i % chunks.len()).copied().unwrap_or(1).max(1);
            i += 1;
            end = (end + step).min(stream.len());
            loop {
                let buf = &stream[start..end];
                let got = f.advance(buf);
                assert_eq!(got, reference(buf), "at {start}..{end}");
                match got {
                    Ok(fr @ (Frame::Complete(n) | Frame::KeepAlive(n))) => {
                        cuts.push(fr);
                        start += n;
                    }
                    Ok(Frame::Partial) => break,
                    Err(_) => return (f, cuts),
                }
            }
        }
        (f, cuts)
    }

    const MSG: &[u8] = b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
Subject: folded\r\n  continued\r\nl: 5\r\n\r\nhello";

    #[test]
    fn resumed_framing_cuts_like_a_fresh_scan_at_every_chunking() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"SIP/2.0 200 OK\nContent-Length: 0\n\n");
        for chunks in [
            &[1usize][..],
            &[2],
            &[3, 1],
            &[7],
            &[13, 1, 2],
            &[64],
            &[10_000],
        ] {
            let (_, cuts) = feed(&stream, chunks);
            // Keep-alive CR/LF runs are cut where the reads end; messages never are.
            let msgs: Vec<usize> = cuts
                .iter()
                .filter_map(|c| match c {
                    Frame::Complete(n) => Some(*n),
                    _ => None,
                })
                .collect();
            let crlf: usize = cuts
                .iter()
                .map(|c| match c {
                    Frame::KeepAlive(n) => *n,
                    _ => 0,
                })
                .sum();
            assert_eq!(msgs, vec![MSG.len(), MSG.len(), 34], "chunks {chunks:?}");
            assert_eq!(crlf, 6, "chunks {chunks:?}");
        }
    }

    #[test]
    fn errors_come_at_the_same_byte_as_a_fresh_scan() {
        let bad: [&[u8]; 7] = [
            b"OPTIONS sip:x SIP/2.0\r\nno colon here\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nx",
            b"OPTIONS sip:x SIP/2.0\r\nl: x1\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nVia: h\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nl: 2000000\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nl: 0\r\n\r",
            b"OPTIONS sip:x SIP/2.0\r\n\r",
        ];
        for b in bad {
            for chunks in [&[1usize][..], &[2, 5], &[100]] {
                // `feed` asserts each answer equals the reference's.
                feed(b, chunks);
            }
        }
        // Over-long header sections and start lines fail the same way, resumed or not.
        let mut long = b"OPTIONS sip:x SIP/2.0\r\nX: ".to_vec();
        long.resize(MAX_HEAD_BYTES + 100, b'a');
        feed(&long, &[1000]);
        let start = vec![b'A'; MAX_HEAD_BYTES + 10];
        feed(&start, &[999]);
    }

    /// A message with `head` bytes of headers: many short lines, or one long line.
    fn big(head: usize, one_line: bool) -> Vec<u8> {
        let mut m = b"INVITE sip:b@h SIP/2.0\r\nContent-Length: 0\r\n".to_vec();
        if one_line {
            m.extend_from_slice(b"X-Long: ");
            m.resize(m.len() + head, b'v');
            m.extend_from_slice(b"\r\n");
        } else {
            let mut i = 0;
            while m.len() < head {
                m.extend_from_slice(format!("X-H{i}: {}\r\n", "v".repeat(90)).as_bytes());
                i += 1;
            }
        }
        m.extend_from_slice(b"\r\n");
        m
    }

    #[test]
    fn a_60k_header_fed_in_small_chunks_is_scanned_in_linear_time() {
        for one_line in [false, true] {
            let m = big(60 * 1024, one_line);
            let n = m.len() as u64;
            for chunks in [&[1usize][..], &[3], &[17, 1]] {
                let (f, cuts) = feed(&m, chunks);
                assert_eq!(cuts, vec![Frame::Complete(m.len())]);
                // Each byte is searched once and each complete line inspected once, plus one
                // re-look per call at most: a small constant per byte, whatever the chunking.
                assert!(
                    f.scanned() <= 3 * n,
                    "one_line {one_line} chunks {chunks:?}: scanned {} for {n} bytes",
                    f.scanned()
                );
            }
            // The same feed restarting from scratch on each read (what the connection did
            // before) looks at the header section again every time: quadratic.
            let mut fresh_total = 0u64;
            for end in (1..=m.len()).step_by(64) {
                let mut f = StreamFramer::new();
                let _ = f.advance(&m[..end]);
                fresh_total += f.scanned();
            }
            assert!(
                fresh_total > 100 * n,
                "rescanning costs {fresh_total} for {n} bytes"
            );
        }
    }

    #[test]
    fn in_message_tracks_a_started_message_only() {
        let mut f = StreamFramer::new();
        assert!(!f.in_message());
        assert_eq!(f.advance(b"\r\n"), Ok(Frame::KeepAlive(2)));
        assert!(!f.in_message());
        assert_eq!(f.advance(b"OPT"), Ok(Frame::Partial));
        assert!(f.in_message());
        let msg = b"OPTIONS sip:x SIP/2.0\r\nl: 2\r\n\r\n";
        assert_eq!(f.advance(msg), Ok(Frame::Partial));
        assert!(f.in_message(), "waiting for the body");
        let mut full = msg.to_vec();
        full.extend_from_slice(b"hi");
        assert_eq!(f.advance(&full), Ok(Frame::Complete(full.len())));
        assert!(!f.in_message());
    }
}
