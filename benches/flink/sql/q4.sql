-- q4, average closing price per category: the winning bid of each auction (the highest bid
-- within its lifetime), averaged per category (an updating aggregate).
CREATE TEMPORARY TABLE nexmark_q4 (category BIGINT, avg_price BIGINT)
WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q4
SELECT Q.category, AVG(Q.final)
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction AS A, bid AS B
    WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) AS Q
GROUP BY Q.category;
