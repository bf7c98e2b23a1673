//! Byte-level scanning helpers shared by the parser, accessors and edits.
//!
//! Invariants: every function takes `&[u8]` plus offsets and never panics (all indexing via
//! `get`); returned offsets are always within the input and `start <= end`. Linear white space
//! here is SP, HTAB, CR and LF, because folded values keep their CRLF inside the value span.
//! Quoted strings honour `\` escapes; comma splitting ignores commas inside quotes and `<...>`.

use super::Span;

/// Byte class table: 1 = RFC 3261 `token` character.
static TOKEN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        t[c] = (b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )) as u8;
        c += 1;
    }
    t
};

/// True for RFC 3261 `token` characters.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[b as usize] != 0
}

/// True if every byte is a token character and there is at least one.
#[inline]
pub(crate) fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Linear white space, including the CR/LF of folded lines.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trims LWS from both ends of `s[start..end]`, returning the new bounds.
#[inline]
pub(crate) fn trim_range(s: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    end = end.min(s.len());
    start = start.min(end);
    while start < end && s.get(start).is_some_and(|&b| is_lws(b)) {
        start += 1;
    }
    while end > start && s.get(end - 1).is_some_and(|&b| is_lws(b)) {
        end -= 1;
    }
    (start, end)
}

/// Skips LWS from `pos`, returning the first non-LWS offset (or `s.len()`).
#[inline]
pub(crate) fn skip_lws(s: &[u8], mut pos: usize) -> usize {
    while s.get(pos).is_some_and(|&b| is_lws(b)) {
        pos += 1;
    }
    pos.min(s.len())
}

/// Given `s[pos] == '"'`, returns the offset just past the closing quote (honouring `\`
/// escapes), or `None` if the string is unterminated. Jumps between `\` and `"` with memchr.
pub(crate) fn skip_quoted(s: &[u8], pos: usize) -> Option<usize> {
    let mut i = pos + 1;
    loop {
        let rest = s.get(i..)?;
        let k = memchr::memchr2(b'\\', b'"', rest)?;
        let at = i + k;
        match rest.get(k) {
            Some(b'"') => return Some(at + 1),
            _ => i = at + 2,
        }
    }
}

/// Finds the next comma-separated element of a multi-value header in `s` from `pos`.
///
/// Returns `(start, end, next)`: the trimmed element bounds and where to continue. Commas
/// inside quoted strings or `<...>` do not split. Empty elements are skipped. `None` when no
/// element remains.
pub(crate) fn next_element(s: &[u8], mut pos: usize) -> Option<(usize, usize, usize)> {
    loop {
        pos = skip_lws(s, pos);
        if pos >= s.len() {
            return None;
        }
        let start = pos;
        let i = element_end(s, pos);
        let (a, b) = trim_range(s, start, i);
        let next = i + 1;
        if a < b {
            return Some((a, b, next));
        }
        pos = next;
    }
}

/// The offset of the comma that ends the element starting at `pos`, or `s.len()`. Outside
/// `<...>` only `,`, `"` and `<` matter; inside, only the closing `>` (quotes and commas in a
/// URI do not count), so the scan jumps between those bytes with memchr.
fn element_end(s: &[u8], mut i: usize) -> usize {
    loop {
        let Some(rest) = s.get(i..) else {
            return s.len();
        };
        let Some(k) = memchr::memchr3(b',', b'"', b'<', rest) else {
            return s.len();
        };
        let at = i + k;
        match rest.get(k) {
            Some(b',') => return at,
            Some(b'"') => match skip_quoted(s, at) {
                Some(j) => i = j,
                None => return s.len(),
            },
            _ => {
                // '<': skip to just past the matching '>' (or to the end).
                match s.get(at + 1..).and_then(|r| memchr::memchr(b'>', r)) {
                    Some(g) => i = at + 1 + g + 1,
                    None => return s.len(),
                }
            }
        }
    }
}

/// Iterator over `;name[=value]` parameters of a raw parameter string, yielding spans
/// relative to that string: `(name, value)`. Names and values are trimmed of LWS; quoted
/// values are returned with their quotes. Empty segments are skipped.
#[derive(Clone, Debug)]
pub struct ParamIter<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> ParamIter<'a> {
    /// Iterates the parameters of `s` (for example `;branch=z9hG4bK1;rport`).
    pub fn new(s: &'a [u8]) -> Self {
        ParamIter { s, pos: 0 }
    }
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (Span, Option<Span>);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.s;
        loop {
            if self.pos >= s.len() {
                return None;
            }
            let seg_start = self.pos;
            let mut i = seg_start;
            let mut eq_at: Option<usize> = None;
            while let Some(&b) = s.get(i) {
                match b {
                    b'"' => i = skip_quoted(s, i).unwrap_or(s.len()),
                    b';' => break,
                    b'=' if eq_at.is_none() => {
                        eq_at = Some(i);
                        i += 1;
                    }
                    _ => i += 1,
                }
            }
            let seg_end = i.min(s.len());
            self.pos = seg_end + 1;
            let (name, value) = match eq_at {
                Some(e) => {
                    let (na, nb) = trim_range(s, seg_start, e);
                    let (va, vb) = trim_range(s, e + 1, seg_end);
                    (Span::new(na, nb), Some(Span::new(va, vb)))
                }
                None => {
                    let (na, nb) = trim_range(s, seg_start, seg_end);
                    (Span::new(na, nb), None)
                }
            };
            if !name.is_empty() {
                return Some((name, value));
            }
        }
    }
}

/// Looks up parameter `name` (case-insensitive) in a raw parameter string.
///
/// `None`: absent; `Some(None)`: present without value; `Some(Some(v))`: present with value.
pub fn param_lookup<'a>(params: &'a [u8], name: &[u8]) -> Option<Option<&'a [u8]>> {
    ParamIter::new(params)
        .find(|(n, _)| n.get(params).eq_ignore_ascii_case(name))
        .map(|(_, v)| v.map(|v| v.get(params)))
}

/// Parses a non-empty all-digit decimal `u32`; `None` on anything else or overflow.
#[inline]
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    u32::try_from(n).ok()
}

/// Parses a decimal `u16` port.
#[inline]
pub(crate) fn parse_u16(s: &[u8]) -> Option<u16> {
    parse_u32(s).and_then(|n| u16::try_from(n).ok())
}

/// Appends the decimal form of `n` to `out` without formatting machinery.
pub(crate) fn push_u32(out: &mut Vec<u8>, mut n: u32) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        if let Some(slot) = tmp.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(tmp.get(i..).unwrap_or(&[]));
}

/// Writes the decimal form of `n` into `dst`, returning the number of bytes written.
pub(crate) fn fmt_u32(n: u32, dst: &mut [u8; 10]) -> usize {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    let mut m = n;
    loop {
        i -= 1;
        if let Some(slot) = tmp.get_mut(i) {
            *slot = b'0' + (m % 10) as u8;
        }
        m /= 10;
        if m == 0 || i == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    if let (Some(d), Some(s)) = (dst.get_mut(..len), tmp.get(i..)) {
        d.copy_from_slice(s);
    }
    len
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    fn elements(s: &[u8]) -> Vec<&[u8]> {
        let mut v = Vec::new();
        let mut pos = 0;
        while let Some((a, b, n)) = next_element(s, pos) {
            v.push(&s[a..b]);
            pos = n;
        }
        v
    }

    #[test]
    fn comma_split_respects_quotes_and_angles() {
        let s = br#""Doe, \"J\"" <sip:a@b;x=1,2>;p=1 , <sip:c>,, sip:d ,"#;
        assert_eq!(
            elements(s),
            vec![
                &br#""Doe, \"J\"" <sip:a@b;x=1,2>;p=1"#[..],
                b"<sip:c>",
                b"sip:d"
            ]
        );
        assert!(elements(b"  ,  , ").is_empty());
        assert_eq!(
            elements(b"\"unterminated, x"),
            vec![&b"\"unterminated, x"[..]]
        );
    }

    #[test]
    fn params_lookup() {
        let p = b" ; branch = z9hG4bK1 ;rport; Received=1.2.3.4;q=\"a;b\"";
        assert_eq!(param_lookup(p, b"branch"), Some(Some(&b"z9hG4bK1"[..])));
        assert_eq!(param_lookup(p, b"RPORT"), Some(None));
        assert_eq!(param_lookup(p, b"received"), Some(Some(&b"1.2.3.4"[..])));
        assert_eq!(param_lookup(p, b"q"), Some(Some(&b"\"a;b\""[..])));
        assert_eq!(param_lookup(p, b"maddr"), None);
        assert_eq!(ParamIter::new(b";;;").count(), 0);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"99999999999"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u16(b"65536"), None);
        let mut v = Vec::new();
        push_u32(&mut v, 0);
        v.push(b' ');
        push_u32(&mut v, 4294967295);
        assert_eq!(v, b"0 4294967295");
        let mut d = [0u8; 10];
        let n = fmt_u32(69, &mut d);
        assert_eq!(&d[..n], b"69");
    }

    #[test]
    fn trims_and_tokens() {
        let s = b" \r\n\t ab c \r\n";
        let (a, b) = trim_range(s, 0, s.len());
        assert_eq!(&s[a..b], b"ab c");
        assert!(is_token_str(b"INVITE"));
        assert!(!is_token_str(b"IN VITE"));
        assert!(!is_token_str(b""));
    }

    /// The byte-at-a-time scanners the memchr versions replaced, kept as the oracle.
    mod reference {
        use super::super::{is_lws, trim_range};

        pub fn skip_quoted(s: &[u8], pos: usize) -> Option<usize> {
            let mut i = pos + 1;
            while let Some(&b) = s.get(i) {
                match b {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }

        pub fn next_element(s: &[u8], mut pos: usize) -> Option<(usize, usize, usize)> {
            loop {
                while s.get(pos).is_some_and(|&b| is_lws(b)) {
                    pos += 1;
                }
                if pos >= s.len() {
                    return None;
                }
                let start = pos;
                let mut i = pos;
                let mut in_angle = false;
                while let Some(&b) = s.get(i) {
                    match b {
                        b'"' if !in_angle => match skip_quoted(s, i) {
                            Some(j) => i = j,
                            None => {
                                i = s.len();
                                break;
                            }
                        },
                        b'<' => {
                            in_angle = true;
                            i += 1;
                        }
                        b'>' => {
                            in_angle = false;
                            i += 1;
                        }
                        b',' if !in_angle => break,
                        _ => i += 1,
                    }
                }
                let i = i.min(s.len());
                let (a, b) = trim_range(s, start, i);
                if a < b {
                    return Some((a, b, i + 1));
                }
                pos = i + 1;
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// The memchr scanners agree with the byte-at-a-time reference on inputs dense in
        /// the bytes that matter (quotes, escapes, angle brackets, commas, `;`, `=`, LWS), and
        /// `ParamIter` keeps its span invariants on the same inputs.
        #[test]
        fn memchr_scanners_match_the_reference(
            s in proptest::collection::vec(proptest::sample::select(
                b"ab,\"<>\\;= \t\r\n".to_vec()), 0..48),
            pos in 0usize..50,
        ) {
            proptest::prop_assert_eq!(skip_quoted(&s, pos), reference::skip_quoted(&s, pos));
            proptest::prop_assert_eq!(next_element(&s, pos), reference::next_element(&s, pos));
            // ParamIter kept its byte loop (a memchr version cost more on short strings), so
            // it is checked against its own invariants instead of a copy of itself: spans in
            // bounds and in order, names non-empty and trimmed, values trimmed, and (without
            // quotes in the input, which may swallow them) no `=` or `;` in a name and no `;`
            // in a value.
            let quoted = s.contains(&b'"');
            let mut last_end = 0;
            for (n, v) in ParamIter::new(&s) {
                let (na, nb) = (n.start_usize(), n.end_usize());
                proptest::prop_assert!(last_end <= na && na < nb && nb <= s.len());
                let name = &s[na..nb];
                proptest::prop_assert!(quoted || !name.contains(&b'=') && !name.contains(&b';'));
                proptest::prop_assert!(!is_lws(name[0]) && !is_lws(name[name.len() - 1]));
                last_end = nb;
                if let Some(v) = v {
                    let (va, vb) = (v.start_usize(), v.end_usize());
                    proptest::prop_assert!(nb < va || (va == vb && nb <= va));
                    proptest::prop_assert!(va <= vb && vb <= s.len());
                    let val = &s[va..vb];
                    if let (Some(f), Some(l)) = (val.first(), val.last()) {
                        proptest::prop_assert!(!is_lws(*f) && !is_lws(*l));
                    }
                    proptest::prop_assert!(quoted || !val.contains(&b';'));
                    last_end = vb;
                }
            }
        }
    }
}
