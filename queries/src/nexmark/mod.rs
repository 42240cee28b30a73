//! Nexmark queries on Eddy.
//!
//! Each query reads the stream of Nexmark events (people, auctions, bids) and writes rows. The
//! window sizes are the standard ones (q5: 10 s windows every 2 s; q7: 10 s tumbling; q11:
//! sessions with a 10 s gap), aligned to epoch 0, so results compare with other engines'.

mod add_channel_id;
mod auction_statistics;
mod avg_price_category;
mod avg_selling_price;
mod bidding_statistics;
mod calculation;
mod channel_statistics;
mod daily_stats;
mod expand_bid;
mod hot_items;
mod last_bid;
mod local_item_suggestion;
mod log_to_file;
mod max_bid;
mod new_users;
mod passthrough;
mod proc_time_windows;
mod side_input_join;
mod top_bids;
mod url_directories;
mod user_sessions;
mod winning_bids;

use std::fmt;
use std::str::FromStr;

use eddy_connectors::endpoints::DynSource;
use eddy_connectors::nexmark::{Bid, Event, NexmarkConfig, NexmarkSource};
use eddy_connectors::NexmarkTable;
use eddy_engine::{Pipeline, Stream, WatermarkConfig};
use eddy_operators::prelude::*;
use serde::Deserialize;

pub use add_channel_id::{channel_id, q21, url_channel_id, Q21Row, Q21_KNOWN_CHANNELS};
pub use auction_statistics::{q17, Q17Row};
pub use avg_price_category::{q4, Q4Row};
pub use avg_selling_price::{q6, Q6Row, Q6_LAST};
pub use bidding_statistics::{q15, Q15Row};
pub use calculation::{
    count_char, q14, q14_price_in_range, BidTimeType, Q14Row, Q14_MAX_EUROS, Q14_MIN_EUROS,
};
pub use channel_statistics::{q16, Q16Row};
pub use daily_stats::{
    price_rank, utc_date, utc_hour_minute, BidCounters, DailyAcc, DailyStats, DayStats, DAY_MS,
    RANK2_MIN_PRICE, RANK3_MIN_PRICE,
};
pub use expand_bid::{q20, Q20Row, Q20_CATEGORY};
pub use hot_items::{q5, Q5Row, Q5_SLIDE, Q5_WINDOW};
pub use last_bid::{q18, Q18Row};
pub use local_item_suggestion::{q3, q3_state, Q3Row, Q3_CATEGORY, Q3_STATES};
pub use log_to_file::{q10, Q10Row, Q10_PARTITIONING};
pub use max_bid::{q7, Q7Row, Q7_WINDOW};
pub use new_users::{q8, Q8Row, Q8_WINDOW};
pub use passthrough::{q0, q1, q2, Q0Row, Q1Row, Q2Row, EUROS_PER_DOLLAR, Q2_MODULUS};
pub use proc_time_windows::{q12, Q12Row, Q12_WINDOW};
pub use side_input_join::{q13, q13_default_table, q13_side_table, Q13Row, Q13_KEYS};
pub use top_bids::{q19, q19_score, Q19Row, Q19_TOP};
pub use url_directories::{q22, Q22Row};
pub use user_sessions::{q11, Q11Row, Q11_GAP};
pub use winning_bids::{q9, Q9Row};

use crate::output::Output;

/// The queries `eddy nexmark run` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Query {
    /// Pass-through: every bid.
    Q0,
    /// Currency conversion: every bid's price × 0.908.
    Q1,
    /// Selection: bids whose auction id is a multiple of 123.
    Q2,
    /// Local item suggestion: sellers in OR, ID or CA with their auctions in category 10
    /// (an updating join).
    Q3,
    /// Average closing price per category (updating): the closing price is the winning bid's.
    Q4,
    /// Hot items: the auctions with the most bids in each 10 s window (every 2 s).
    Q5,
    /// Average selling price of each seller's last 10 closed auctions (updating).
    Q6,
    /// Highest bid: the bids with the highest price in each 10 s tumbling window.
    Q7,
    /// New users: people who registered and created an auction in the same 10 s window.
    Q8,
    /// Winning bids: each auction with its highest bid, when it closes.
    Q9,
    /// Log to file system: every bid, to Parquet partitioned by the date and hour of its event
    /// time, each partition marked `_SUCCESS` once the watermark passes its end.
    Q10,
    /// User sessions: each bidder's bids per session (sessions end after 10 s without a bid).
    Q11,
    /// Processing-time windows: bids per bidder in 10 s wall-clock windows (not deterministic).
    Q12,
    /// Bounded side input join: every bid with a side table's value for `auction % 10000`.
    Q13,
    /// Calculation: bids priced 1–50 M euros with their time of day and a user function's
    /// count of `c`s in `extra`.
    Q14,
    /// Bidding statistics: per UTC day, bids, distinct bidders and distinct auctions per price
    /// rank.
    Q15,
    /// Channel statistics: q15's counters per channel and UTC day, with the latest minute.
    Q16,
    /// Auction statistics: per auction and UTC day, bids per price rank and price statistics.
    Q17,
    /// Last bid: each bidder's last bid on each auction (updating).
    Q18,
    /// Auction top-10 price: each auction's 10 highest bids with their rank (updating).
    Q19,
    /// Expand bid: every bid on a category-10 auction, with the auction's columns.
    Q20,
    /// Add channel id: bids with their channel's id, from the channel's name or the URL.
    Q21,
    /// URL directories: bids with the first three directories of their URL.
    Q22,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 23] = [
        Query::Q0,
        Query::Q1,
        Query::Q2,
        Query::Q3,
        Query::Q4,
        Query::Q5,
        Query::Q6,
        Query::Q7,
        Query::Q8,
        Query::Q9,
        Query::Q10,
        Query::Q11,
        Query::Q12,
        Query::Q13,
        Query::Q14,
        Query::Q15,
        Query::Q16,
        Query::Q17,
        Query::Q18,
        Query::Q19,
        Query::Q20,
        Query::Q21,
        Query::Q22,
    ];

    /// The kinds of event this query reads (the tables its SQL names): the others go through
    /// its first stage and are dropped, so a source may leave them out.
    pub fn tables(self) -> &'static [NexmarkTable] {
        use NexmarkTable::{Auction, Bid, Person};
        match self {
            Query::Q3 | Query::Q8 => &[Person, Auction],
            Query::Q4 | Query::Q6 | Query::Q9 | Query::Q20 => &[Auction, Bid],
            _ => &[Bid],
        }
    }

    /// Adds this query's stages to `events`' pipeline and sends its rows to `output`.
    pub fn build(self, events: Stream<Event>, output: &Output) {
        match self {
            Query::Q0 => output.attach(q0(events), "sink", Q0Row::TIMESTAMP_FIELDS),
            Query::Q1 => output.attach(q1(events), "sink", Q1Row::TIMESTAMP_FIELDS),
            Query::Q2 => output.attach(q2(events), "sink", &[]),
            Query::Q3 => output.attach_changes(q3(events), "sink", Q3Row::TIMESTAMP_FIELDS),
            Query::Q4 => output.attach_changes(q4(events), "sink", Q4Row::TIMESTAMP_FIELDS),
            Query::Q5 => output.attach(q5(events), "sink", Q5Row::TIMESTAMP_FIELDS),
            Query::Q6 => output.attach_changes(q6(events), "sink", Q6Row::TIMESTAMP_FIELDS),
            Query::Q7 => output.attach(q7(events), "sink", Q7Row::TIMESTAMP_FIELDS),
            Query::Q8 => output.attach(q8(events), "sink", Q8Row::TIMESTAMP_FIELDS),
            Query::Q9 => output.attach(q9(events), "sink", Q9Row::TIMESTAMP_FIELDS),
            Query::Q10 => output.attach_partitioned(
                q10(events),
                "sink",
                Q10Row::TIMESTAMP_FIELDS,
                Q10_PARTITIONING,
            ),
            Query::Q11 => output.attach(q11(events), "sink", Q11Row::TIMESTAMP_FIELDS),
            Query::Q12 => output.attach(q12(events), "sink", Q12Row::TIMESTAMP_FIELDS),
            Query::Q13 => output.attach(
                q13(events, q13_side_table(None)),
                "sink",
                Q13Row::TIMESTAMP_FIELDS,
            ),
            Query::Q14 => output.attach(q14(events), "sink", Q14Row::TIMESTAMP_FIELDS),
            Query::Q15 => output.attach(q15(events), "sink", Q15Row::TIMESTAMP_FIELDS),
            Query::Q16 => output.attach(q16(events), "sink", Q16Row::TIMESTAMP_FIELDS),
            Query::Q17 => output.attach(q17(events), "sink", Q17Row::TIMESTAMP_FIELDS),
            Query::Q18 => output.attach_changes(q18(events), "sink", Q18Row::TIMESTAMP_FIELDS),
            Query::Q19 => output.attach_changes(q19(events), "sink", Q19Row::TIMESTAMP_FIELDS),
            Query::Q20 => output.attach(q20(events), "sink", Q20Row::TIMESTAMP_FIELDS),
            Query::Q21 => output.attach(q21(events), "sink", &[]),
            Query::Q22 => output.attach(q22(events), "sink", &[]),
        }
    }

    /// Whether the query's rows are the same on every run: false for q12, whose
    /// processing-time windows depend on when records are processed.
    pub fn deterministic(self) -> bool {
        self != Query::Q12
    }

    /// A pipeline running this query on events read from `source`: Nexmark events as JSON
    /// (`{"Bid": {...}}`, serde's encoding of [`Event`]), timed by their `date_time` (see
    /// [`eddy_connectors::nexmark::json_event_time`]). Records that are not events are
    /// rejected (dead letters).
    pub fn pipeline_from(self, source: DynSource, output: &Output) -> Pipeline {
        let pipeline = Pipeline::new(self.to_string());
        let events = pipeline
            .source("events", source, WatermarkConfig::default())
            .try_map("decode_events", |event: &serde_json::Value| {
                Event::deserialize(event)
            });
        self.build(events, output);
        pipeline
    }

    /// A pipeline running this query on the built-in generator.
    pub fn pipeline(self, config: NexmarkConfig, output: &Output) -> Pipeline {
        let (pipeline, events) = nexmark_pipeline(&self.to_string(), config);
        self.build(events, output);
        pipeline
    }

    /// As [`Query::pipeline`], for q13 with its side table read from `side_input` (CSV, or JSON
    /// lines for `.jsonl`, `.ndjson`, `.json`) on every worker; other queries have no side input.
    pub fn pipeline_with_side_input(
        self,
        config: NexmarkConfig,
        output: &Output,
        side_input: &std::path::Path,
    ) -> Result<Pipeline, String> {
        if self != Query::Q13 {
            return Err(format!("{self} has no side input; only q13 reads one"));
        }
        let (pipeline, events) = nexmark_pipeline(&self.to_string(), config);
        let table = q13_side_table(Some(side_input));
        output.attach(q13(events, table), "sink", Q13Row::TIMESTAMP_FIELDS);
        Ok(pipeline)
    }
}

/// A new pipeline named `name` and its stream of events from the built-in generator.
fn nexmark_pipeline(name: &str, config: NexmarkConfig) -> (Pipeline, Stream<Event>) {
    let pipeline = Pipeline::new(name);
    let events = pipeline.source(
        "nexmark",
        NexmarkSource::new(config),
        WatermarkConfig::default(),
    );
    (pipeline, events)
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format!("{self:?}").to_lowercase())
    }
}

impl FromStr for Query {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Query::ALL
            .into_iter()
            .find(|q| q.to_string() == s.to_lowercase())
            .ok_or_else(|| {
                let known: Vec<String> = Query::ALL.iter().map(Query::to_string).collect();
                format!("unknown query '{s}': the queries are {}", known.join(", "))
            })
    }
}

/// The bids among the events (the first stage of every query here).
fn bids(events: Stream<Event>) -> Stream<Bid> {
    events.flat_map("bids", |e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}
