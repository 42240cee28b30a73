-- q3, local item suggestion: sellers in Oregon, Idaho or California with their auctions in
-- category 10 (an updating inner join). The generator spells states in lower case.
CREATE TEMPORARY TABLE nexmark_q3 (
    name STRING, city STRING, state STRING, id BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q3
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND UPPER(P.state) IN ('OR', 'ID', 'CA');
