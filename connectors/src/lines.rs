//! Reading input line by line without ever holding more than a bounded number of bytes of one
//! line: what the file sources ([`JsonLinesSource`](crate::JsonLinesSource),
//! [`CsvSource`](crate::files::CsvSource)) read with, so that a line of gigabytes (or a file
//! without a single line break) is one rejected record, not an exhausted memory.

use std::io::{self, BufRead};

/// The default largest record the file sources take: 1 MiB. A longer one is rejected.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1 << 20;

/// How many bytes of a record over the size limit its rejection keeps (its start).
pub(crate) const KEPT_OF_OVERSIZED: usize = 4096;

/// How a [`Lines::read_line`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineEnd {
    /// At a line break (`\n`), which the bytes read include.
    Break,
    /// At the end of the input (having read nothing: the input is done).
    Eof,
    /// At the limit, before any line break: the rest of the line is still unread.
    Cut,
}

/// A buffered input read line by line, with bytes read too far given back by
/// [`Lines::unread`] read again first.
pub(crate) struct Lines {
    input: Box<dyn BufRead>,
    /// Bytes given back, read before `input` (from `unread_at` on).
    unread: Vec<u8>,
    unread_at: usize,
    /// The last two bytes read or skipped.
    last: [u8; 2],
}

impl Lines {
    /// Reads `input`.
    pub(crate) fn new(input: Box<dyn BufRead>) -> Self {
        Lines {
            input,
            unread: Vec::new(),
            unread_at: 0,
            last: [0; 2],
        }
    }

    fn fill(&mut self) -> io::Result<&[u8]> {
        if self.unread_at < self.unread.len() {
            return Ok(&self.unread[self.unread_at..]);
        }
        self.input.fill_buf()
    }

    /// Notes `bytes` as read, then consumes them.
    fn take(&mut self, bytes_end: [u8; 2], n: usize) {
        match n {
            0 => {}
            1 => self.last = [self.last[1], bytes_end[1]],
            _ => self.last = bytes_end,
        }
        self.consume(n);
    }

    fn consume(&mut self, n: usize) {
        if self.unread_at < self.unread.len() {
            self.unread_at += n;
            if self.unread_at == self.unread.len() {
                self.unread.clear();
                self.unread_at = 0;
            }
        } else {
            self.input.consume(n);
        }
    }

    /// Appends the next line, through its `\n`, to `buf`, but at most `limit` bytes of it.
    pub(crate) fn read_line(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<LineEnd> {
        let mut room = limit;
        loop {
            let available = self.fill()?;
            if available.is_empty() {
                return Ok(LineEnd::Eof);
            }
            if room == 0 {
                return Ok(LineEnd::Cut);
            }
            let window = &available[..available.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    buf.extend_from_slice(&window[..=at]);
                    let end = last_two(&window[..=at]);
                    self.take(end, at + 1);
                    return Ok(LineEnd::Break);
                }
                None => {
                    let n = window.len();
                    buf.extend_from_slice(window);
                    let end = last_two(window);
                    self.take(end, n);
                    room -= n;
                }
            }
        }
    }

    /// Reads past the rest of the current line, through its `\n`, keeping none of it: how many
    /// bytes that was.
    pub(crate) fn skip_line(&mut self) -> io::Result<u64> {
        let mut skipped = 0;
        loop {
            let available = self.fill()?;
            if available.is_empty() {
                return Ok(skipped);
            }
            let (n, done) = match available.iter().position(|b| *b == b'\n') {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            let end = last_two(&available[..n]);
            self.take(end, n);
            skipped += n as u64;
            if done {
                return Ok(skipped);
            }
        }
    }

    /// How long the line break of the line last read or skipped to its end is: 2 (`\r\n`), 1
    /// (`\n`) or 0 (the input ended without one).
    pub(crate) fn break_len(&self) -> usize {
        match self.last {
            [b'\r', b'\n'] => 2,
            [_, b'\n'] => 1,
            _ => 0,
        }
    }

    /// Gives `bytes` back: they are read again, before anything not yet read.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        let rest = self.unread.split_off(self.unread_at);
        self.unread.clear();
        self.unread.extend_from_slice(bytes);
        self.unread.extend_from_slice(&rest);
        self.unread_at = 0;
    }
}

/// The last two bytes of `bytes` (the last one last), padded in front with zeros.
fn last_two(bytes: &[u8]) -> [u8; 2] {
    match bytes {
        [.., a, b] => [*a, *b],
        [b] => [0, *b],
        [] => [0, 0],
    }
}

/// `line` without its line break (`\n` or `\r\n`).
pub(crate) fn without_break(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Why a record over the size limit is rejected, for a record of `size` bytes.
pub(crate) fn oversized(size: u64, max: usize) -> String {
    format!(
        "the record is {size} bytes, over the limit of {max} bytes (max_record_size); it is \
         rejected and reading goes on at the next line. Raise max_record_size if records this \
         large are expected"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], capacity: usize) -> Lines {
        Lines::new(Box::new(io::BufReader::with_capacity(
            capacity,
            io::Cursor::new(text.to_vec()),
        )))
    }

    #[test]
    fn lines_stop_at_their_break_or_their_limit_and_given_back_bytes_come_first() {
        let mut input = lines(b"ab\ncdefgh\nij", 2);
        let mut buf = Vec::new();
        assert_eq!(input.read_line(&mut buf, 10).unwrap(), LineEnd::Break);
        assert_eq!(buf, b"ab\n");
        buf.clear();
        assert_eq!(input.read_line(&mut buf, 3).unwrap(), LineEnd::Cut);
        assert_eq!(buf, b"cde");
        input.unread(b"CDE");
        buf.clear();
        assert_eq!(input.read_line(&mut buf, 4).unwrap(), LineEnd::Cut);
        assert_eq!(buf, b"CDEf");
        assert_eq!(input.skip_line().unwrap(), 3);
        assert_eq!(input.break_len(), 1);
        buf.clear();
        assert_eq!(input.read_line(&mut buf, 10).unwrap(), LineEnd::Eof);
        assert_eq!(buf, b"ij");
        buf.clear();
        assert_eq!(input.read_line(&mut buf, 10).unwrap(), LineEnd::Eof);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_line_break_right_at_the_limit_is_read() {
        let mut input = lines(b"abcd\r\n", 1);
        let mut buf = Vec::new();
        assert_eq!(input.read_line(&mut buf, 2).unwrap(), LineEnd::Cut);
        input.skip_line().unwrap();
        assert_eq!(input.break_len(), 2, "a \\r\\n split between reads");
        let mut input = lines(b"abc\n", 64);
        let mut buf = Vec::new();
        assert_eq!(input.read_line(&mut buf, 4).unwrap(), LineEnd::Break);
        assert_eq!(without_break(&buf), b"abc");
        assert_eq!(without_break(b"x\r\n"), b"x");
    }
}
