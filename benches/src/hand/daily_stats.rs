//! q15, q16 and q17: the in-order bids folded into one accumulator per key of the current UTC
//! day — the queries' own [`DailyStats`] aggregate, called directly — and every key's row
//! finished when the day changes and at the end.

use std::hash::Hash;
use std::hint::black_box;

use eddy_connectors::nexmark::{Bid, Event};
use eddy_engine::Record;
use eddy_operators::Aggregate;
use eddy_queries::nexmark::{
    utc_date, utc_hour_minute, DailyAcc, DailyStats, DayStats, Q15Row, Q16Row, Q17Row, DAY_MS,
};
use rustc_hash::FxHashMap;

/// Folds the bids per `key` and day with `stats`; makes each (key, day)'s row with `row` (given
/// the key, the day's first ms and the statistics). Returns the number of rows.
fn per_day<K: Hash + Eq, R>(
    events: Vec<Record<Event>>,
    stats: DailyStats,
    key: impl Fn(&Bid) -> K,
    row: impl Fn(K, u64, DayStats) -> R,
) -> u64 {
    let mut day = None;
    let mut groups: FxHashMap<K, DailyAcc> = FxHashMap::default();
    let mut rows = 0;
    let mut close = |day: Option<u64>, groups: &mut FxHashMap<K, DailyAcc>| {
        let start = day.unwrap_or(0) * DAY_MS;
        for (k, acc) in groups.drain() {
            black_box(row(k, start, stats.finish(acc)));
            rows += 1;
        }
    };
    for (t, e) in events {
        if let Event::Bid(b) = e {
            let d = t / DAY_MS;
            if day != Some(d) {
                close(day, &mut groups);
                day = Some(d);
            }
            let acc = groups.entry(key(&b)).or_insert_with(|| stats.create());
            stats.add(acc, b);
        }
    }
    close(day, &mut groups);
    rows
}

/// q15: per day.
pub(super) fn q15(events: Vec<Record<Event>>) -> u64 {
    per_day(
        events,
        DailyStats::with_distinct(),
        |_| (),
        |(), start, s| Q15Row::new(utc_date(start), s.counters),
    )
}

/// q16: per channel and day.
pub(super) fn q16(events: Vec<Record<Event>>) -> u64 {
    per_day(
        events,
        DailyStats::with_distinct(),
        |b| b.channel.clone(),
        |channel, start, s| {
            Q16Row::new(
                channel,
                utc_date(start),
                utc_hour_minute(s.last_bid),
                s.counters,
            )
        },
    )
}

/// q17: per auction and day.
pub(super) fn q17(events: Vec<Record<Event>>) -> u64 {
    per_day(
        events,
        DailyStats::counts(),
        |b| b.auction,
        |auction, start, s| Q17Row {
            auction: auction as u64,
            day: utc_date(start),
            total_bids: s.counters.total_bids,
            rank1_bids: s.counters.rank1_bids,
            rank2_bids: s.counters.rank2_bids,
            rank3_bids: s.counters.rank3_bids,
            min_price: s.min_price,
            max_price: s.max_price,
            avg_price: s.sum_price / s.counters.total_bids.max(1),
            sum_price: s.sum_price,
        },
    )
}
