-- q1, currency conversion: every bid with its price in euros (price × 0.908).
CREATE TEMPORARY TABLE nexmark_q1 (
    auction BIGINT, bidder BIGINT, price DECIMAL(23, 3), date_time BIGINT, extra STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q1
SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid;
