//! `eddy nexmark generate --format csv` writes person.csv, auction.csv and bid.csv as Flink's
//! `csv` format reads them: no header, one line per row, the Parquet rows' columns in order
//! (times as ms since the Unix epoch), fields quoted only when they must be. Read back, they
//! hold the generator's rows.

use std::process::Command;

use eddy_connectors::nexmark::{generate_all, NexmarkConfig, NexmarkTables};

/// Splits one CSV line into fields (RFC 4180: `"..."` quoting, `""` for a quote).
fn fields(line: &str) -> Vec<String> {
    let (mut out, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    out.push(field);
    out
}

fn read(path: &std::path::Path, columns: usize) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Vec<String>> = text.lines().map(fields).collect();
    for row in &rows {
        assert_eq!(row.len(), columns, "{}: {row:?}", path.display());
    }
    rows
}

#[test]
fn csv_export_reads_back_as_the_generated_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["nexmark", "generate", "--events", "5000", "--format", "csv"])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = generate_all(&NexmarkConfig::with_events(5000));
    let tables = NexmarkTables::from_events(events.iter().map(|(_, e)| e));

    let persons = read(&dir.path().join("person.csv"), 8);
    let auctions = read(&dir.path().join("auction.csv"), 10);
    let bids = read(&dir.path().join("bid.csv"), 7);
    assert_eq!(persons.len(), tables.persons.len());
    assert_eq!(auctions.len(), tables.auctions.len());
    assert_eq!(bids.len(), tables.bids.len());
    assert_eq!(persons.len() + auctions.len() + bids.len(), 5000);

    // No header: the first line is the first row.
    let p = &tables.persons[0];
    assert_eq!(persons[0][0], p.id.to_string());
    assert_eq!(persons[0][1], p.name);
    assert_eq!(persons[0][6], p.date_time.to_string());
    let a = &tables.auctions[0];
    assert_eq!(auctions[0][0], a.id.to_string());
    assert_eq!(auctions[0][6], a.expires.to_string());
    assert_eq!(auctions[0][8], a.category.to_string());
    for (row, b) in bids.iter().zip(&tables.bids) {
        let expected = [
            b.auction.to_string(),
            b.bidder.to_string(),
            b.price.to_string(),
            b.channel.clone(),
            b.url.clone(),
            b.date_time.to_string(),
            b.extra.clone(),
        ];
        assert_eq!(row[..], expected[..]);
    }
}

#[test]
fn csv_fields_with_commas_and_quotes_are_quoted() {
    use eddy_connectors::nexmark::{write_csv, BidRow};
    let dir = tempfile::tempdir().unwrap();
    let bid = BidRow {
        auction: 1,
        bidder: 2,
        price: 3,
        channel: "a,b".into(),
        url: "say \"hi\"".into(),
        date_time: 4,
        extra: String::new(),
    };
    let path = dir.path().join("sub/bid.csv");
    assert_eq!(write_csv(&path, std::slice::from_ref(&bid)).unwrap(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, "1,2,3,\"a,b\",\"say \"\"hi\"\"\",4,\n");
    assert_eq!(fields(text.trim_end())[4], "say \"hi\"");
}
