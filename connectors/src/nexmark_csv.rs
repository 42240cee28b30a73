//! Nexmark events read back from the CSV files `eddy nexmark generate --format csv` writes
//! (`person.csv`, `auction.csv`, `bid.csv`, no header, times in ms) — the same input Flink
//! reads in the side-by-side benchmark, so both engines pay for parsing.
//!
//! Each worker reads its share of the three tables and merges them by event time into one
//! stream of [`Event`]s, in order (each table's rows are in time order), so a zero-disorder
//! watermark is exact. The share: with the tables split into `parts` part files
//! (`{dir}/split{parts}/{table}/part-{i}.csv`, as the Flink runner splits them), worker `i`
//! reads parts `i`, `i + workers`, ...; unsplit, worker 0 reads the whole files. A row that does
//! not parse is rejected with its `file:line`. [`NexmarkCsvSource::only`] reads some of the
//! tables, as a SQL engine reads only the tables a query names (q3 needs no bids).

use std::path::{Path, PathBuf};

use eddy_engine::{
    ConnectorError, Partition, ReadStatus, Record, RecordError, Source, SourceReader,
};
use serde::de::DeserializeOwned;

use crate::event_time::EventTimeOf;
use crate::files::CsvSource;
use crate::nexmark::{Auction, Bid, Event, Person};
use crate::nexmark::{AuctionRow, BidRow, PersonRow};

/// One of the three Nexmark tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NexmarkTable {
    /// `person.csv`: new people.
    Person,
    /// `auction.csv`: new auctions.
    Auction,
    /// `bid.csv`: bids.
    Bid,
}

impl NexmarkTable {
    /// All three tables.
    pub const ALL: [NexmarkTable; 3] = [
        NexmarkTable::Person,
        NexmarkTable::Auction,
        NexmarkTable::Bid,
    ];

    /// The table's file name without `.csv`.
    pub fn name(self) -> &'static str {
        match self {
            NexmarkTable::Person => "person",
            NexmarkTable::Auction => "auction",
            NexmarkTable::Bid => "bid",
        }
    }
}

/// The Nexmark tables as CSV files (see the module docs).
#[derive(Clone, Debug)]
pub struct NexmarkCsvSource {
    dir: PathBuf,
    parts: Option<usize>,
    tables: Vec<NexmarkTable>,
}

impl NexmarkCsvSource {
    /// Reads `{dir}/{person,auction,bid}.csv` (worker 0 reads them all).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NexmarkCsvSource {
            dir: dir.into(),
            parts: None,
            tables: NexmarkTable::ALL.to_vec(),
        }
    }

    /// Reads the tables split into `parts` part files each, under `{dir}/split{parts}/`.
    pub fn split(dir: impl Into<PathBuf>, parts: usize) -> Self {
        NexmarkCsvSource {
            dir: dir.into(),
            parts: Some(parts.max(1)),
            tables: NexmarkTable::ALL.to_vec(),
        }
    }

    /// Reads only `tables` (the others' files are not opened).
    pub fn only(mut self, tables: &[NexmarkTable]) -> Self {
        self.tables = tables.to_vec();
        self
    }

    /// The files of `table` that worker `partition` reads (none when it is not read).
    fn files(&self, table: NexmarkTable, partition: Partition) -> Vec<PathBuf> {
        if !self.tables.contains(&table) {
            return Vec::new();
        }
        let table = table.name();
        match self.parts {
            None if partition.index == 0 => vec![self.dir.join(format!("{table}.csv"))],
            None => Vec::new(),
            Some(parts) => (partition.index..parts)
                .step_by(partition.count.max(1))
                .map(|i| self.part(table, parts, i))
                .collect(),
        }
    }

    fn part(&self, table: &str, parts: usize, i: usize) -> PathBuf {
        self.dir
            .join(format!("split{parts}"))
            .join(table)
            .join(format!("part-{i}.csv"))
    }
}

/// One table's rows of one worker, as events, with the next one kept for the merge.
struct Table {
    reader: Box<dyn SourceReader<Event>>,
    buffer: std::collections::VecDeque<Record<Event>>,
    done: bool,
}

impl Table {
    fn open<R>(files: Vec<PathBuf>, to_event: fn(R) -> Event) -> Result<Self, ConnectorError>
    where
        R: DeserializeOwned + serde::Serialize + Send + 'static,
    {
        let source = CsvSource::<R>::new(files, EventTimeOf::Arrival).header(false);
        let rows = source.open(Partition { index: 0, count: 1 })?;
        Ok(Table {
            reader: Box::new(Events {
                rows,
                to_event,
                batch: Vec::new(),
            }),
            buffer: Default::default(),
            done: false,
        })
    }

    /// The event time of the next event, reading more rows if needed.
    fn peek(&mut self, rejected: &mut Vec<RecordError>) -> Result<Option<u64>, ConnectorError> {
        while self.buffer.is_empty() && !self.done {
            let mut batch = Vec::new();
            if self.reader.poll(&mut batch, 1024, rejected)? == ReadStatus::Done {
                self.done = true;
            }
            self.buffer.extend(batch);
        }
        Ok(self.buffer.front().map(|(t, _)| *t))
    }
}

/// Rows of one table turned into events timed by their `date_time`.
struct Events<R> {
    rows: Box<dyn SourceReader<R>>,
    to_event: fn(R) -> Event,
    batch: Vec<Record<R>>,
}

impl<R> SourceReader<Event> for Events<R> {
    fn poll(
        &mut self,
        out: &mut Vec<Record<Event>>,
        max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        let status = self.rows.poll(&mut self.batch, max, rejected)?;
        for (_, row) in self.batch.drain(..) {
            let event = (self.to_event)(row);
            out.push((crate::nexmark::event_time(&event), event));
        }
        Ok(status)
    }
}

fn person(r: PersonRow) -> Event {
    Event::Person(Person {
        id: r.id as usize,
        name: r.name,
        email_address: r.email_address,
        credit_card: r.credit_card,
        city: r.city,
        state: r.state,
        date_time: r.date_time.max(0) as u64,
        extra: r.extra,
    })
}

fn auction(r: AuctionRow) -> Event {
    Event::Auction(Auction {
        id: r.id as usize,
        item_name: r.item_name,
        description: r.description,
        initial_bid: r.initial_bid as usize,
        reserve: r.reserve as usize,
        date_time: r.date_time.max(0) as u64,
        expires: r.expires.max(0) as u64,
        seller: r.seller as usize,
        category: r.category as usize,
        extra: r.extra,
    })
}

fn bid(r: BidRow) -> Event {
    Event::Bid(Bid {
        auction: r.auction as usize,
        bidder: r.bidder as usize,
        price: r.price as usize,
        channel: r.channel,
        url: r.url,
        date_time: r.date_time.max(0) as u64,
        extra: r.extra,
    })
}

impl Source<Event> for NexmarkCsvSource {
    fn describe(&self) -> String {
        let tables: Vec<&str> = self.tables.iter().map(|t| t.name()).collect();
        let parts = self.parts.map_or(String::new(), |p| format!(", {p} parts"));
        format!(
            "nexmark-csv({}{parts}, {})",
            self.dir.display(),
            tables.join("+")
        )
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<Event>>, ConnectorError> {
        Ok(Box::new(Merge {
            tables: vec![
                Table::open(self.files(NexmarkTable::Person, partition), person)?,
                Table::open(self.files(NexmarkTable::Auction, partition), auction)?,
                Table::open(self.files(NexmarkTable::Bid, partition), bid)?,
            ],
        }))
    }
}

/// Merges a worker's three tables by event time.
struct Merge {
    tables: Vec<Table>,
}

impl SourceReader<Event> for Merge {
    fn poll(
        &mut self,
        out: &mut Vec<Record<Event>>,
        max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        let start = out.len();
        while out.len() - start < max {
            let mut next: Option<(usize, u64)> = None;
            for (i, table) in self.tables.iter_mut().enumerate() {
                if let Some(t) = table.peek(rejected)? {
                    if next.is_none_or(|(_, best)| t < best) {
                        next = Some((i, t));
                    }
                }
            }
            let Some((i, _)) = next else {
                return Ok(if out.len() == start {
                    ReadStatus::Done
                } else {
                    ReadStatus::Ready
                });
            };
            out.extend(self.tables[i].buffer.pop_front());
        }
        Ok(ReadStatus::Ready)
    }
}

/// Whether `dir` holds the three tables as `eddy nexmark generate --format csv` writes them.
pub fn has_csv_tables(dir: &Path) -> bool {
    ["person", "auction", "bid"]
        .iter()
        .all(|t| dir.join(format!("{t}.csv")).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexmark::{generate_all, write_csv, NexmarkConfig, NexmarkTables};

    fn read(source: &NexmarkCsvSource, partition: Partition) -> Vec<Record<Event>> {
        let mut reader = source.open(partition).unwrap();
        let (mut out, mut rejected) = (Vec::new(), Vec::new());
        while reader.poll(&mut out, 333, &mut rejected).unwrap() != ReadStatus::Done {}
        assert!(rejected.is_empty(), "{rejected:?}");
        out
    }

    #[test]
    fn the_csv_tables_read_back_as_the_generated_events_in_time_order() {
        let config = NexmarkConfig::with_events(3_000);
        let events = generate_all(&config);
        let tables = NexmarkTables::from_events(events.iter().map(|(_, e)| e));
        let dir = tempfile::tempdir().unwrap();
        write_csv(dir.path().join("person.csv"), &tables.persons).unwrap();
        write_csv(dir.path().join("auction.csv"), &tables.auctions).unwrap();
        write_csv(dir.path().join("bid.csv"), &tables.bids).unwrap();
        assert!(has_csv_tables(dir.path()));
        let back = read(
            &NexmarkCsvSource::new(dir.path()),
            Partition { index: 0, count: 1 },
        );
        assert_eq!(back.len(), events.len());
        assert!(
            back.windows(2).all(|w| w[0].0 <= w[1].0),
            "merged in time order"
        );
        let key = |rs: &[Record<Event>]| {
            let mut k: Vec<String> = rs.iter().map(|(t, e)| format!("{t} {e:?}")).collect();
            k.sort();
            k
        };
        assert_eq!(key(&back), key(&events));
        let second = read(
            &NexmarkCsvSource::new(dir.path()),
            Partition { index: 1, count: 2 },
        );
        assert!(second.is_empty(), "unsplit files are worker 0's");
        let bids = read(
            &NexmarkCsvSource::new(dir.path()).only(&[NexmarkTable::Bid]),
            Partition { index: 0, count: 1 },
        );
        let all_bids: Vec<Record<Event>> = back
            .into_iter()
            .filter(|(_, e)| matches!(e, Event::Bid(_)))
            .collect();
        assert!(!bids.is_empty());
        assert_eq!(key(&bids), key(&all_bids), "only the bid table, all of it");
    }
}
