//! Line reading with a bound: a file's lines are read one at a time, and a
//! line longer than [`MAX_LINE`] is read through to its end but only its
//! first [`MAX_LINE`] bytes are kept, so a file without newlines (or with
//! one huge line) never grows memory past the bound.

use std::io::{BufRead, ErrorKind};

/// The longest line kept, in bytes (its newline included). No telemetry row
/// of any format comes near it.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads the next line (through its `\n`, or to the end of the input) into
/// `buf`, keeping at most `max` bytes of it. Answers `None` at the end of
/// the input, else whether the line was longer than `max` (cut).
pub fn read_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut total = 0usize;
    loop {
        let avail = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok((total > 0).then_some(total > max));
        }
        let (len, end) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&avail[..len.min(room)]);
        total = total.saturating_add(len);
        reader.consume(len);
        if end {
            return Ok(Some(total > max));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<(Vec<u8>, bool)> {
        let mut r = std::io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(cut) = read_line(&mut r, &mut buf, max).unwrap() {
            out.push((buf.clone(), cut));
        }
        out
    }

    #[test]
    fn lines_are_split_and_a_long_one_is_cut_to_the_bound() {
        let got = all(b"ab\n0123456789\nlast", 6);
        assert_eq!(
            got,
            vec![
                (b"ab\n".to_vec(), false),
                (b"012345".to_vec(), true),
                (b"last".to_vec(), false),
            ]
        );
        assert!(all(b"", 6).is_empty());
    }
}
