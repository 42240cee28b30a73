-- q11, user sessions: bids per bidder per session of activity, a session being a run of the
-- bidder's bids less than 10 seconds apart, ending 10 seconds after its last bid.
--
-- Flink's Nexmark q11 uses a 10 s session gap, but Flink's session windows also merge two bids
-- exactly 10 s apart (a window [t, t + gap) touching the next one's start counts as
-- overlapping), where Eddy (and Beam's original Nexmark) start a new session. A gap of
-- 9.999 s merges exactly the bids less than 10 s apart (times are whole ms), and the session's
-- end is moved back to 10 s after its last bid.
CREATE TEMPORARY TABLE nexmark_q11 (
    bidder BIGINT, bid_count BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3)
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q11
SELECT bidder, COUNT(*) AS bid_count, window_start,
       window_end + INTERVAL '0.001' SECOND AS window_end
FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(ts), INTERVAL '9.999' SECOND))
GROUP BY bidder, window_start, window_end;
