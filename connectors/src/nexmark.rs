//! The Nexmark benchmark's event generator as a source, over the `nexmark` crate.
//!
//! Generation is deterministic: the base time is a fixed constant (not the wall clock, as the
//! `nexmark` crate's default is) and every event is a pure function of its global index, so a
//! run with N workers produces exactly the events of a run with one.

use ::nexmark::EventGenerator;
use eddy_engine::{
    ConnectorError, Partition, ReadStatus, Record, RecordError, Source, SourcePositions,
    SourceReader,
};
use serde::{Deserialize, Serialize};

pub use ::nexmark::event::{Auction, Bid, Event, Person};

/// The default base time: 2023-11-14T22:13:20Z, in milliseconds since the Unix epoch.
pub const DEFAULT_BASE_TIME: u64 = 1_700_000_000_000;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// How many events all workers together generate.
    pub events: u64,
    /// Event time of the first event, in ms since the Unix epoch (default [`DEFAULT_BASE_TIME`]).
    pub base_time: u64,
    /// The event-time rate: events per second of event time (default 10 000). Zero is taken as 1.
    pub events_per_second: usize,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            events: 1_000_000,
            base_time: DEFAULT_BASE_TIME,
            events_per_second: 10_000,
        }
    }
}

impl NexmarkConfig {
    /// A default configuration generating `events` events.
    pub fn with_events(events: u64) -> Self {
        NexmarkConfig {
            events,
            ..Default::default()
        }
    }

    /// The `nexmark` crate's configuration: its defaults, with our fixed base time and rate.
    pub fn generator_config(&self) -> ::nexmark::config::NexmarkConfig {
        let rate = self.events_per_second.max(1);
        ::nexmark::config::NexmarkConfig {
            base_time: self.base_time,
            first_rate: rate,
            next_rate: rate,
            ..Default::default()
        }
    }

    /// How many events worker `partition.index` of `partition.count` generates: the global
    /// indices `index, index + count, ...` below [`Self::events`].
    pub fn share(&self, partition: Partition) -> u64 {
        let (index, count) = (partition.index as u64, partition.count as u64);
        if count == 0 || index >= self.events {
            return 0;
        }
        (self.events - index).div_ceil(count)
    }
}

/// The event time of an event encoded as JSON (`{"Bid": {..., "date_time": ...}}`, as serde
/// writes an [`Event`]): its variant's `date_time`.
pub fn json_event_time(event: &serde_json::Value) -> Option<u64> {
    event
        .as_object()?
        .values()
        .next()?
        .get("date_time")?
        .as_u64()
}

/// The event time of an event: the `date_time` of its variant (ms since the Unix epoch).
pub fn event_time(e: &Event) -> u64 {
    match e {
        Event::Person(p) => p.date_time,
        Event::Auction(a) => a.date_time,
        Event::Bid(b) => b.date_time,
    }
}

/// A source of Nexmark events. Worker `index` of `count` generates the events of global index
/// `index, index + count, index + 2 * count, ...`, so any number of workers together produce
/// exactly [`NexmarkConfig::events`] events, the same ones.
#[derive(Clone, Debug)]
pub struct NexmarkSource {
    config: NexmarkConfig,
}

impl NexmarkSource {
    /// A source generating what `config` says.
    pub fn new(config: NexmarkConfig) -> Self {
        NexmarkSource { config }
    }

    /// The configuration.
    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }
}

impl Source<Event> for NexmarkSource {
    fn describe(&self) -> String {
        format!("nexmark(events={})", self.config.events)
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SourceReader<Event>>, ConnectorError> {
        if partition.index >= partition.count {
            return Err(ConnectorError::user(format!(
                "nexmark source: worker {} of {} does not exist; the worker count must be at least 1",
                partition.index, partition.count
            )));
        }
        Ok(Box::new(NexmarkReader::new(
            &self.config,
            vec![Split {
                next: partition.index as u64,
                step: partition.count as u64,
            }],
        )))
    }

    /// Resumes the splits (each a stride of global event indices) the positions name. At an
    /// unchanged worker count a reader carries on its own splits. At another count `n`, every
    /// old split `(next, step)` is cut into `n` strides `(next + w·step, n·step)` and worker `w`
    /// takes the `w`-th of each, merged in event order: the events left are shared evenly.
    fn open_at(
        &self,
        partition: Partition,
        positions: &SourcePositions,
    ) -> Result<Box<dyn SourceReader<Event>>, ConnectorError> {
        let rescaled = positions.workers != partition.count;
        let mut splits = Vec::new();
        for position in positions.all() {
            let decoded: Vec<Split> = serde_json::from_slice(position).map_err(|e| {
                ConnectorError::user(format!(
                    "nexmark source: a checkpoint position does not decode ({e}); was the \
                     checkpoint written by another source?"
                ))
            })?;
            for split in decoded.into_iter().filter(|s| s.step > 0) {
                splits.push(if rescaled {
                    let (w, n) = (partition.index as u64, partition.count as u64);
                    Split {
                        next: split.next.saturating_add(w.saturating_mul(split.step)),
                        step: split.step.saturating_mul(n),
                    }
                } else {
                    split
                });
            }
        }
        Ok(Box::new(NexmarkReader::new(&self.config, splits)))
    }

    fn expected_records(&self) -> Option<u64> {
        Some(self.config.events)
    }
}

/// A stride of global event indices: `next, next + step, ...` below the event count.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Split {
    next: u64,
    step: u64,
}

/// How many events of `split` are left below `events`.
fn remaining(events: u64, split: &Split) -> u64 {
    events.saturating_sub(split.next).div_ceil(split.step)
}

/// One worker's share of the generator: one split, or several after a restore.
struct NexmarkReader {
    config: NexmarkConfig,
    splits: Vec<(Split, EventGenerator)>,
}

impl NexmarkReader {
    fn new(config: &NexmarkConfig, splits: Vec<Split>) -> Self {
        let splits = splits
            .into_iter()
            .map(|s| {
                let generator = EventGenerator::new(config.generator_config())
                    .with_offset(s.next)
                    .with_step(s.step.max(1));
                (s, generator)
            })
            .collect();
        NexmarkReader {
            config: config.clone(),
            splits,
        }
    }

    /// Appends up to `max` events in event order (the least next index first).
    fn fill(&mut self, out: &mut Vec<Record<Event>>, max: usize) -> usize {
        let events = self.config.events;
        if let [(split, generator)] = self.splits.as_mut_slice() {
            let n = remaining(events, split).min(max as u64) as usize;
            out.reserve(n);
            out.extend(generator.by_ref().take(n).map(|e| (event_time(&e), e)));
            split.next += n as u64 * split.step;
            return n;
        }
        let mut n = 0;
        while n < max {
            let next = self
                .splits
                .iter_mut()
                .filter(|(s, _)| s.next < events)
                .min_by_key(|(s, _)| s.next);
            let Some((split, generator)) = next else {
                break;
            };
            let e = generator.next().expect("the generator is endless");
            split.next += split.step;
            out.push((event_time(&e), e));
            n += 1;
        }
        n
    }
}

impl SourceReader<Event> for NexmarkReader {
    fn poll(
        &mut self,
        out: &mut Vec<Record<Event>>,
        max: usize,
        _rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        if self
            .splits
            .iter()
            .all(|(s, _)| remaining(self.config.events, s) == 0)
        {
            return Ok(ReadStatus::Done);
        }
        self.fill(out, max);
        Ok(ReadStatus::Ready)
    }

    fn position(&self) -> Option<Vec<u8>> {
        let splits: Vec<Split> = self.splits.iter().map(|(s, _)| *s).collect();
        Some(serde_json::to_vec(&splits).expect("splits serialize"))
    }
}

/// Generates one worker's share in memory (for benchmarks and tests), in generation order.
/// An impossible partition (`index >= count`) gets nothing.
pub fn generate(config: &NexmarkConfig, partition: Partition) -> Vec<Record<Event>> {
    if partition.index >= partition.count {
        return Vec::new();
    }
    let mut reader = NexmarkReader::new(
        config,
        vec![Split {
            next: partition.index as u64,
            step: partition.count as u64,
        }],
    );
    let mut out = Vec::new();
    reader.fill(&mut out, usize::MAX);
    out
}

/// Generates every event in memory: [`generate`] for partition 0 of 1.
pub fn generate_all(config: &NexmarkConfig) -> Vec<Record<Event>> {
    generate(config, Partition { index: 0, count: 1 })
}

/// A Nexmark time (ms since the Unix epoch, unsigned) as the signed ms of an Arrow timestamp.
pub fn timestamp_ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A person as a flat row, for export (Parquet, JSON). Times are ms since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRow {
    /// Person id.
    pub id: u64,
    /// Full name.
    pub name: String,
    /// Email address.
    pub email_address: String,
    /// Credit card number.
    pub credit_card: String,
    /// City.
    pub city: String,
    /// US state.
    pub state: String,
    /// When the person registered (ms).
    pub date_time: i64,
    /// Padding.
    pub extra: String,
}

impl PersonRow {
    /// The fields holding ms timestamps (for [`crate::ParquetSink::timestamp_ms`]).
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["date_time"];
}

impl From<&Person> for PersonRow {
    fn from(p: &Person) -> Self {
        PersonRow {
            id: p.id as u64,
            name: p.name.clone(),
            email_address: p.email_address.clone(),
            credit_card: p.credit_card.clone(),
            city: p.city.clone(),
            state: p.state.clone(),
            date_time: timestamp_ms(p.date_time),
            extra: p.extra.clone(),
        }
    }
}

/// An auction as a flat row, for export (Parquet, JSON). Times are ms since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionRow {
    /// Auction id.
    pub id: u64,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Initial bid.
    pub initial_bid: u64,
    /// Reserve price.
    pub reserve: u64,
    /// When the auction opened (ms).
    pub date_time: i64,
    /// When the auction closes (ms).
    pub expires: i64,
    /// The seller's person id.
    pub seller: u64,
    /// Category id.
    pub category: u64,
    /// Padding.
    pub extra: String,
}

impl AuctionRow {
    /// The fields holding ms timestamps (for [`crate::ParquetSink::timestamp_ms`]).
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["date_time", "expires"];
}

impl From<&Auction> for AuctionRow {
    fn from(a: &Auction) -> Self {
        AuctionRow {
            id: a.id as u64,
            item_name: a.item_name.clone(),
            description: a.description.clone(),
            initial_bid: a.initial_bid as u64,
            reserve: a.reserve as u64,
            date_time: timestamp_ms(a.date_time),
            expires: timestamp_ms(a.expires),
            seller: a.seller as u64,
            category: a.category as u64,
            extra: a.extra.clone(),
        }
    }
}

/// A bid as a flat row, for export (Parquet, JSON). Times are ms since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BidRow {
    /// The auction's id.
    pub auction: u64,
    /// The bidder's person id.
    pub bidder: u64,
    /// Price bid.
    pub price: u64,
    /// Channel the bid came through.
    pub channel: String,
    /// URL of the bid.
    pub url: String,
    /// When the bid was made (ms).
    pub date_time: i64,
    /// Padding.
    pub extra: String,
}

impl BidRow {
    /// The fields holding ms timestamps (for [`crate::ParquetSink::timestamp_ms`]).
    pub const TIMESTAMP_FIELDS: &'static [&'static str] = &["date_time"];
}

impl From<Bid> for BidRow {
    /// Moves the bid's strings into the row.
    fn from(b: Bid) -> Self {
        BidRow {
            auction: b.auction as u64,
            bidder: b.bidder as u64,
            price: b.price as u64,
            channel: b.channel,
            url: b.url,
            date_time: timestamp_ms(b.date_time),
            extra: b.extra,
        }
    }
}

impl From<&Bid> for BidRow {
    fn from(b: &Bid) -> Self {
        BidRow::from(b.clone())
    }
}

/// Events split by kind into export rows, keeping their order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NexmarkTables {
    /// The people.
    pub persons: Vec<PersonRow>,
    /// The auctions.
    pub auctions: Vec<AuctionRow>,
    /// The bids.
    pub bids: Vec<BidRow>,
}

impl NexmarkTables {
    /// Splits `events` into their three tables.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut tables = NexmarkTables::default();
        for e in events {
            match e {
                Event::Person(p) => tables.persons.push(p.into()),
                Event::Auction(a) => tables.auctions.push(a.into()),
                Event::Bid(b) => tables.bids.push(b.into()),
            }
        }
        tables
    }
}

/// A row that writes itself as one CSV line: its fields in declaration order, times as ms
/// since the Unix epoch (integers), no header.
pub trait CsvRow {
    /// Appends the row's fields, comma-separated, with a newline.
    fn write_csv(&self, out: &mut String);
}

/// Appends `s` as a CSV field: quoted (RFC 4180, `"` doubled) when it holds a comma, quote or
/// line break, as itself otherwise.
fn csv_str(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

impl CsvRow for PersonRow {
    fn write_csv(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(out, "{},", self.id);
        for s in [
            &self.name,
            &self.email_address,
            &self.credit_card,
            &self.city,
            &self.state,
        ] {
            csv_str(out, s);
            out.push(',');
        }
        let _ = write!(out, "{},", self.date_time);
        csv_str(out, &self.extra);
        out.push('\n');
    }
}

impl CsvRow for AuctionRow {
    fn write_csv(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(out, "{},", self.id);
        csv_str(out, &self.item_name);
        out.push(',');
        csv_str(out, &self.description);
        let _ = write!(
            out,
            ",{},{},{},{},{},{},",
            self.initial_bid,
            self.reserve,
            self.date_time,
            self.expires,
            self.seller,
            self.category
        );
        csv_str(out, &self.extra);
        out.push('\n');
    }
}

impl CsvRow for BidRow {
    fn write_csv(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(out, "{},{},{},", self.auction, self.bidder, self.price);
        csv_str(out, &self.channel);
        out.push(',');
        csv_str(out, &self.url);
        let _ = write!(out, ",{},", self.date_time);
        csv_str(out, &self.extra);
        out.push('\n');
    }
}

/// Writes `rows` to the CSV file `path` (no header: Flink's `csv` format reads none), one line
/// per row in [`CsvRow`]'s layout, creating the directory if missing. Returns the number of
/// rows written.
pub fn write_csv<T: CsvRow>(
    path: impl AsRef<std::path::Path>,
    rows: &[T],
) -> Result<u64, ConnectorError> {
    use std::io::Write as _;
    let path = path.as_ref();
    let fail = |e: std::io::Error| {
        ConnectorError::user(format!("cannot write {}: {e}", path.display())).caused_by(e)
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    let mut line = String::new();
    for row in rows {
        line.clear();
        row.write_csv(&mut line);
        file.write_all(line.as_bytes()).map_err(fail)?;
    }
    file.flush().map_err(fail)?;
    Ok(rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(records: &[Record<Event>]) -> Vec<(u64, String)> {
        let mut keys: Vec<_> = records
            .iter()
            .map(|(t, e)| (*t, format!("{e:?}")))
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn three_workers_generate_the_same_events_as_one() {
        let config = NexmarkConfig::with_events(1_000);
        let one = generate_all(&config);
        assert_eq!(one.len(), 1_000);
        let mut three = Vec::new();
        for index in 0..3 {
            three.extend(generate(&config, Partition { index, count: 3 }));
        }
        assert_eq!(three.len(), 1_000);
        assert_eq!(key(&one), key(&three));
    }

    #[test]
    fn shares_cover_the_events_exactly() {
        let config = NexmarkConfig::with_events(10);
        let shares: Vec<u64> = (0..4)
            .map(|index| config.share(Partition { index, count: 4 }))
            .collect();
        assert_eq!(shares, vec![3, 3, 2, 2]);
        let config = NexmarkConfig::with_events(2);
        assert_eq!(config.share(Partition { index: 3, count: 4 }), 0);
    }

    #[test]
    fn base_time_is_fixed_and_runs_repeat() {
        let config = NexmarkConfig::with_events(100);
        let a = generate_all(&config);
        let b = generate_all(&config);
        assert_eq!(a, b);
        assert_eq!(event_time(&a[0].1), DEFAULT_BASE_TIME);
        assert_eq!(a[0].0, DEFAULT_BASE_TIME);
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn source_reads_in_batches_then_finishes() {
        let source = NexmarkSource::new(NexmarkConfig::with_events(25));
        assert_eq!(source.expected_records(), Some(25));
        assert_eq!(source.describe(), "nexmark(events=25)");
        let mut total = Vec::new();
        for index in 0..2 {
            let mut reader = source.open(Partition { index, count: 2 }).unwrap();
            let mut rejected = Vec::new();
            loop {
                let mut out = Vec::new();
                let status = reader.poll(&mut out, 5, &mut rejected).unwrap();
                assert!(out.len() <= 5);
                total.extend(out);
                if status == ReadStatus::Done {
                    break;
                }
            }
            assert!(rejected.is_empty());
        }
        assert_eq!(key(&total), key(&generate_all(source.config())));
        assert!(source.open(Partition { index: 0, count: 0 }).is_err());
    }

    #[test]
    fn tables_split_events_by_kind() {
        let events = generate_all(&NexmarkConfig::with_events(500));
        let tables = NexmarkTables::from_events(events.iter().map(|(_, e)| e));
        assert_eq!(
            tables.persons.len() + tables.auctions.len() + tables.bids.len(),
            500
        );
        assert!(!tables.persons.is_empty() && !tables.auctions.is_empty());
        assert_eq!(tables.persons[0].date_time, DEFAULT_BASE_TIME as i64);
    }
}
