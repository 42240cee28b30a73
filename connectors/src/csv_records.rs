//! CSV input split into records, each bounded in size and each ending at a line break:
//! what [`CsvSource`](crate::files::CsvSource) reads with.
//!
//! A record is one line, or several while a quoted field holds line breaks (RFC 4180). A quote
//! that is still open at the end of the input, or whose record would grow past the size limit,
//! does not swallow the lines after it: the line it opens on is rejected alone, and reading
//! goes on at the next line. A line longer than the limit is rejected too, keeping only its
//! start. Lines end with `\n` or `\r\n`; blank lines are skipped. Fields are split by
//! [`csv_core`] (quotes doubled inside quoted fields, as the `csv` crate reads them).

use std::io::{self, BufRead};

use csv_core::{ReadRecordResult, Terminator};

use crate::jsonl::Offset;
use crate::lines::{oversized, without_break, LineEnd, Lines, KEPT_OF_OVERSIZED};

/// What [`CsvRecords::next_record`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A record, starting on line `line` (1-based): its fields are in the record passed in.
    Record { line: u64 },
    /// A record (or a line) that cannot be read, on line `line`, and why.
    Rejected { line: u64, message: String },
    /// The end of the input.
    End,
}

/// The records of one CSV input (see the module docs).
pub(crate) struct CsvRecords {
    lines: Lines,
    parser: Parser,
    max: usize,
    /// The bytes of the record (or rejected line) last read, line breaks included.
    raw: Vec<u8>,
    /// Where the next record starts.
    next: Offset,
}

impl CsvRecords {
    /// Reads `input`, which starts at `next` in its file, splitting fields at `delimiter` and
    /// taking records of at most `max` bytes.
    pub(crate) fn new(input: Box<dyn BufRead>, delimiter: u8, max: usize, next: Offset) -> Self {
        CsvRecords {
            lines: Lines::new(input),
            parser: Parser::new(delimiter),
            max,
            raw: Vec::new(),
            next,
        }
    }

    /// Where the next record starts: a checkpoint position.
    pub(crate) fn next_offset(&self) -> Offset {
        self.next
    }

    /// The bytes of the record last read or rejected, without its last line break (of a
    /// record over the limit, its first [`KEPT_OF_OVERSIZED`] bytes).
    pub(crate) fn raw(&self) -> &[u8] {
        without_break(&self.raw)
    }

    /// Reads the next record's fields into `record`.
    pub(crate) fn next_record(&mut self, record: &mut csv::ByteRecord) -> io::Result<Next> {
        loop {
            self.raw.clear();
            let line = self.next.line + 1;
            let limit = self.line_limit();
            let end = self.lines.read_line(&mut self.raw, limit)?;
            if end == LineEnd::Eof && self.raw.is_empty() {
                return Ok(Next::End);
            }
            if end == LineEnd::Cut {
                let size = self.raw.len() as u64 + self.lines.skip_line()?;
                self.advance(size, 1);
                self.raw.truncate(KEPT_OF_OVERSIZED);
                let content = size - self.lines.break_len() as u64;
                return Ok(Next::Rejected {
                    line,
                    message: oversized(content, self.max),
                });
            }
            if without_break(&self.raw).is_empty() {
                self.advance(self.raw.len() as u64, 1);
                continue;
            }
            return self.finish_record(line, end, record);
        }
    }

    /// The most bytes a record's lines may take: the limit and a `\r\n`.
    fn line_limit(&self) -> usize {
        self.max.saturating_add(2)
    }

    /// Parses the record whose first line (ended by `end`) is in `raw`, reading more lines
    /// while a quoted field is open.
    fn finish_record(
        &mut self,
        line: u64,
        mut end: LineEnd,
        record: &mut csv::ByteRecord,
    ) -> io::Result<Next> {
        let first = self.raw.len();
        self.parser.reset();
        let mut fed = 0;
        loop {
            let mut closed = self.parser.feed(&self.raw[fed..]);
            fed = self.raw.len();
            // A last line without a break ends with one, to learn whether a quote is open.
            if !closed && end == LineEnd::Eof {
                closed = self.parser.feed(b"\n");
            }
            if closed {
                break;
            }
            if end != LineEnd::Eof {
                let room = self.line_limit().saturating_sub(fed);
                end = self.lines.read_line(&mut self.raw, room)?;
            }
            let at_end = end == LineEnd::Eof && self.raw.len() == fed;
            if at_end || end == LineEnd::Cut {
                return Ok(self.reject_open_quote(line, first, at_end));
            }
        }
        // Its lines: one per break, and the last one if the input ended without one.
        let breaks = self.raw.iter().filter(|b| **b == b'\n').count();
        let lines = breaks + usize::from(!self.raw.ends_with(b"\n"));
        self.advance(self.raw.len() as u64, lines as u64);
        let size = without_break(&self.raw).len();
        if size > self.max {
            self.raw.truncate(KEPT_OF_OVERSIZED);
            return Ok(Next::Rejected {
                line,
                message: oversized(size as u64, self.max),
            });
        }
        self.parser.fields(record, self.raw.ends_with(b"\r\n"));
        Ok(Next::Record { line })
    }

    /// Rejects the first line (`first` bytes of `raw`) of a record whose quote does not close
    /// before the end of the input (`at_end`) or within the limit, giving the lines after it
    /// back to be read again.
    fn reject_open_quote(&mut self, line: u64, first: usize, at_end: bool) -> Next {
        self.lines.unread(&self.raw[first..]);
        self.raw.truncate(first);
        self.advance(first as u64, 1);
        let until = if at_end {
            "before the end of the input".to_string()
        } else {
            format!("within max_record_size ({} bytes)", self.max)
        };
        Next::Rejected {
            line,
            message: format!(
                "a quoted field opens on this line and does not close {until}; the line is \
                 rejected and reading goes on at the next line. Close the quote, and double \
                 each quote inside a quoted field (\"\")"
            ),
        }
    }

    /// Moves the next record's start on by `bytes` bytes and `lines` lines.
    fn advance(&mut self, bytes: u64, lines: u64) {
        self.next.byte += bytes;
        self.next.line += lines;
    }
}

/// A [`csv_core`] parser with its output: one record's fields, one after another, and where
/// each ends.
struct Parser {
    core: csv_core::Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
    outlen: usize,
    endlen: usize,
}

impl Parser {
    fn new(delimiter: u8) -> Self {
        Parser {
            core: csv_core::ReaderBuilder::new()
                .delimiter(delimiter)
                .terminator(Terminator::Any(b'\n'))
                .build(),
            fields: vec![0; 1024],
            ends: vec![0; 64],
            outlen: 0,
            endlen: 0,
        }
    }

    /// Starts a new record.
    fn reset(&mut self) {
        self.core.reset();
        self.outlen = 0;
        self.endlen = 0;
    }

    /// Parses `input`, the record's next bytes: whether the record ended. (The parser takes
    /// no input as the end of the input, so none is fed.)
    fn feed(&mut self, mut input: &[u8]) -> bool {
        if input.is_empty() {
            return false;
        }
        loop {
            let (result, nin, nout, nend) = self.core.read_record(
                input,
                &mut self.fields[self.outlen..],
                &mut self.ends[self.endlen..],
            );
            input = &input[nin..];
            self.outlen += nout;
            self.endlen += nend;
            match result {
                ReadRecordResult::InputEmpty => return false,
                ReadRecordResult::OutputFull => {
                    let len = self.fields.len();
                    self.fields.resize(len * 2, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
                ReadRecordResult::Record | ReadRecordResult::End => return true,
            }
        }
    }

    /// The ended record's fields into `record`; with `crlf` line ends, less the `\r` that
    /// ends the last field (outside any quotes: a quoted `\r\n` does not end a record).
    fn fields(&self, record: &mut csv::ByteRecord, crlf: bool) {
        record.clear();
        let mut start = 0;
        for (i, &field_end) in self.ends[..self.endlen].iter().enumerate() {
            let mut end = field_end;
            if crlf && i + 1 == self.endlen && end > start && self.fields[end - 1] == b'\r' {
                end -= 1;
            }
            record.push_field(&self.fields[start..end]);
            start = field_end;
        }
    }
}
