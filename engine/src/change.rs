//! Updating results: a change log of rows with multiplicities.
//!
//! Operators in *final* mode emit each result once, when the watermark passes it. Operators in
//! *updating* mode emit a [`Change`] stream instead: a row with `diff = +1` when it appears,
//! `diff = -1` when it is retracted (a correction replaces a row by retracting the old one and
//! adding the new one). Summing the diffs per row gives the result as it stands; sinks write the
//! change log itself, with `diff` as the last column.

use serde::{Deserialize, Serialize};

/// One change to an updating result: `row` added (`diff > 0`) or retracted (`diff < 0`).
/// Serialized as the row's own fields followed by `diff`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change<T> {
    /// The row.
    #[serde(flatten)]
    pub row: T,
    /// Its multiplicity change.
    pub diff: i64,
}

impl<T> Change<T> {
    /// `row` added once.
    pub fn insert(row: T) -> Self {
        Change { row, diff: 1 }
    }

    /// `row` retracted once.
    pub fn retract(row: T) -> Self {
        Change { row, diff: -1 }
    }
}

/// Sums a change log into the rows it leaves standing, each repeated by its multiplicity,
/// sorted. Rows whose diffs sum to zero disappear; a negative sum is reported as an error
/// naming the row, since a result cannot hold a row fewer than zero times.
pub fn consolidate<T: Ord + Clone + std::fmt::Debug>(
    changes: impl IntoIterator<Item = Change<T>>,
) -> Result<Vec<T>, String> {
    let mut counts = std::collections::BTreeMap::<T, i64>::new();
    for change in changes {
        *counts.entry(change.row).or_insert(0) += change.diff;
    }
    let mut rows = Vec::new();
    for (row, count) in counts {
        if count < 0 {
            return Err(format!("row {row:?} was retracted more often than added"));
        }
        rows.extend(std::iter::repeat_n(row, count as usize));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidate_sums_diffs_and_rejects_negative_counts() {
        let log = vec![
            Change::insert("a"),
            Change::insert("b"),
            Change::retract("a"),
            Change::insert("b"),
        ];
        assert_eq!(consolidate(log), Ok(vec!["b", "b"]));
        assert!(consolidate(vec![Change::retract("x")]).is_err());
    }

    #[test]
    fn change_serializes_row_fields_then_diff() {
        #[derive(Serialize)]
        struct Row {
            id: u64,
        }
        let json = serde_json::to_string(&Change::insert(Row { id: 7 })).unwrap();
        assert_eq!(json, r#"{"id":7,"diff":1}"#);
    }
}
