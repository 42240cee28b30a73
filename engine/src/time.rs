//! Event time, records and watermarks.
//!
//! Timestamps in timely are watermarks (see the crate docs): [`WatermarkTracker`] computes the
//! watermark a source holds its capability at.

use std::time::{Duration, Instant};

/// Event time: milliseconds since the Unix epoch.
pub type EventTime = u64;

/// A record as it travels between stages: its exact event time and its data.
pub type Record<T> = (EventTime, T);

/// How a source's watermark follows its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkConfig {
    /// Allowed out-of-orderness: the watermark trails the largest event time seen by this much.
    pub max_disorder: Duration,
    /// After this long without data, the watermark advances with the wall clock, so one quiet
    /// partition does not stall the whole pipeline. `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            max_disorder: Duration::ZERO,
            idle_timeout: Some(Duration::from_secs(5)),
        }
    }
}

impl WatermarkConfig {
    /// Bounded out-of-orderness of `max_disorder`, with the default idle timeout.
    pub fn bounded(max_disorder: Duration) -> Self {
        WatermarkConfig {
            max_disorder,
            ..Default::default()
        }
    }
}

/// Computes a source's watermark: the largest event time seen minus the allowed disorder,
/// following the wall clock once the source has been idle for the idle timeout. Never decreases.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    config: WatermarkConfig,
    max_seen: Option<EventTime>,
    watermark: EventTime,
    idle: Option<Instant>,
}

impl WatermarkTracker {
    /// A tracker at watermark 0 that has seen nothing.
    pub fn new(config: WatermarkConfig) -> Self {
        WatermarkTracker {
            config,
            max_seen: None,
            watermark: 0,
            idle: None,
        }
    }

    /// A tracker resuming at `watermark` after having seen event times up to `max_seen` (a
    /// source restored from a checkpoint).
    pub fn resume(
        config: WatermarkConfig,
        watermark: EventTime,
        max_seen: Option<EventTime>,
    ) -> Self {
        WatermarkTracker {
            config,
            max_seen,
            watermark,
            idle: None,
        }
    }

    /// The largest event time seen, if any.
    pub fn max_seen(&self) -> Option<EventTime> {
        self.max_seen
    }

    /// The current watermark.
    pub fn watermark(&self) -> EventTime {
        self.watermark
    }

    /// Notes a record's event time (does not move the watermark until [`Self::on_data`]).
    #[inline]
    pub fn observe(&mut self, event_time: EventTime) {
        if self.max_seen.is_none_or(|max| event_time > max) {
            self.max_seen = Some(event_time);
        }
    }

    /// Data arrived: the watermark follows the largest event time seen. Returns the watermark.
    pub fn on_data(&mut self) -> EventTime {
        self.idle = None;
        if let Some(max) = self.max_seen {
            let disorder = self.config.max_disorder.as_millis() as u64;
            self.watermark = self.watermark.max(max.saturating_sub(disorder));
        }
        self.watermark
    }

    /// No data this time, and none waiting at the source
    /// ([`SourceReader::caught_up`](crate::SourceReader::caught_up)). Once the source has been
    /// idle for the idle timeout, its watermark follows the wall clock, `wall_clock_ms −
    /// max_disorder` (it never goes back), so a quiet partition stops holding back the
    /// pipeline's watermark. Records it reads later are stamped with that watermark, and are
    /// late for windows that have closed meanwhile. Returns the watermark.
    pub fn on_idle(&mut self, now: Instant, wall_clock_ms: u64) -> EventTime {
        let Some(timeout) = self.config.idle_timeout else {
            return self.watermark;
        };
        let since = *self.idle.get_or_insert(now);
        if now.saturating_duration_since(since) >= timeout {
            let disorder = self.config.max_disorder.as_millis() as u64;
            self.watermark = self.watermark.max(wall_clock_ms.saturating_sub(disorder));
        }
        self.watermark
    }
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_trails_max_by_disorder_and_never_decreases() {
        let mut w = WatermarkTracker::new(WatermarkConfig::bounded(Duration::from_millis(100)));
        w.observe(1_000);
        assert_eq!(w.on_data(), 900);
        w.observe(950);
        assert_eq!(w.on_data(), 900);
        w.observe(1_500);
        assert_eq!(w.on_data(), 1_400);
    }

    #[test]
    fn idle_source_follows_the_wall_clock_after_timeout() {
        let config = WatermarkConfig {
            max_disorder: Duration::from_millis(10),
            idle_timeout: Some(Duration::from_millis(50)),
        };
        let mut w = WatermarkTracker::new(config);
        w.observe(1_000);
        w.on_data();
        let start = Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        assert_eq!(w.on_idle(start, 5_000), 990);
        assert_eq!(w.on_idle(later(20), 5_020), 990, "not idle long enough");
        assert_eq!(
            w.on_idle(later(80), 5_080),
            5_070,
            "wall clock minus disorder"
        );
        w.observe(2_000);
        assert_eq!(
            w.on_data(),
            5_070,
            "data behind an idle advance does not move it back"
        );
        assert_eq!(
            w.on_idle(later(90), 5_090),
            5_070,
            "data restarts the timeout"
        );
    }
}
