-- q12, processing-time windows: how many bids each bidder makes in each 10-second tumbling
-- window of processing (wall-clock) time, PROCTIME() stamped when the bid is read.
--
-- Not deterministic, in Flink as in Eddy: which window a bid falls in depends on when it is
-- processed; each bidder's total over its windows is the number of bids it made. Differences
-- from Eddy: Flink stamps the time at the source, Eddy when the bid reaches the worker that
-- counts its bidder; and Flink drops the processing-time windows still open when a bounded input
-- ends (their timers never fire), where Eddy emits them, so a job shorter than a window (any
-- small input) writes no rows in Flink and counts every bid in Eddy.
CREATE TEMPORARY TABLE nexmark_q12 (
    bidder BIGINT, bid_count BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3)
) WITH ('connector' = 'blackhole');

CREATE TEMPORARY VIEW bid_proctime AS SELECT *, PROCTIME() AS p_time FROM bid;

INSERT INTO nexmark_q12
SELECT bidder, COUNT(*) AS bid_count, window_start, window_end
FROM TABLE(TUMBLE(TABLE bid_proctime, DESCRIPTOR(p_time), INTERVAL '10' SECOND))
GROUP BY bidder, window_start, window_end;
