//! Bounded reads: every read that returns a list stops at a count and (where its items can be
//! large) a byte budget, and says where to continue.
//!
//! A page holds at most `limit` items and, past its first item, at most `max_bytes` of the
//! items' stored bytes: a page always makes progress, even when one item alone is over the
//! budget. A page that stopped before the end carries a cursor (an audit page, a seq; a list,
//! an opaque string) naming its last item; the next page starts strictly after it, so paging
//! from no cursor to none visits every item once.

use crate::error::{AppError, Result};
use crate::store::{Store, StoreError, Table};

/// The byte budget of one page of records or escalations: their stored JSON, past the first.
pub const PAGE_BYTES: usize = 4 << 20;

/// Longest cursor accepted, in characters (a cursor names a row's key, at most a few hundred
/// bytes, hex-encoded).
const MAX_CURSOR_CHARS: usize = 2048;

/// How much one read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most items.
    pub limit: usize,
    /// Most bytes of the items' stored form, past the first item.
    pub max_bytes: usize,
}

impl Bounds {
    /// `limit` items (at least one) and [`PAGE_BYTES`].
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            max_bytes: PAGE_BYTES,
        }
    }

    /// A query's `limit`: `default` when absent, else clamped to `1..=max`.
    pub fn from_query(limit: Option<usize>, default: usize, max: usize) -> Self {
        Self::new(limit.unwrap_or(default).clamp(1, max))
    }
}

/// Counts what a page has taken against its [`Bounds`].
#[derive(Debug)]
pub struct Budget {
    bounds: Bounds,
    items: usize,
    bytes: usize,
    /// The page stopped at the byte budget.
    over_bytes: bool,
}

impl Budget {
    /// An empty page.
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            items: 0,
            bytes: 0,
            over_bytes: false,
        }
    }

    /// Whether the page has room for another item (of any size) by count.
    pub fn has_room(&self) -> bool {
        self.items < self.bounds.limit
    }

    /// Takes an item of `bytes` if it fits: the first item always does; a later one if the
    /// count and the byte budget allow. An item refused for its bytes ends the page.
    pub fn take(&mut self, bytes: usize) -> bool {
        if !self.has_room() || self.over_bytes {
            return false;
        }
        if self.items > 0 && self.bytes.saturating_add(bytes) > self.bounds.max_bytes {
            self.over_bytes = true;
            return false;
        }
        self.items += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        true
    }

    /// The page is full by count.
    pub fn full(&self) -> bool {
        !self.has_room()
    }

    /// The page stopped because the next item would have passed the byte budget.
    pub fn truncated(&self) -> bool {
        self.over_bytes
    }

    /// The page stopped before the end: full by count, or over the byte budget.
    pub fn stopped(&self) -> bool {
        self.full() || self.over_bytes
    }
}

/// A page of a table's rows under `prefix`, in key order, strictly after the key suffix
/// `after`: at most `limit` rows (key suffix after `prefix`, value), and the suffix the next
/// page starts after when more remain.
#[allow(clippy::type_complexity)]
pub fn rows_after(
    store: &Store,
    table: Table,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> std::result::Result<(Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>), StoreError> {
    let start = [prefix, after.unwrap_or_default()].concat();
    let mut rows = Vec::new();
    for item in store.iter_prefix_from(table, prefix, &start) {
        let (key, value) = item?;
        let suffix = key[prefix.len()..].to_vec();
        if after.is_some_and(|a| a == suffix) {
            continue;
        }
        if rows.len() == limit.max(1) {
            let next = rows.last().map(|(k, _): &(Vec<u8>, Vec<u8>)| k.clone());
            return Ok((rows, next));
        }
        rows.push((suffix, value));
    }
    Ok((rows, None))
}

/// A cursor naming `key` (the sort key of a list's last item), opaque to clients.
pub fn cursor(key: &[u8]) -> String {
    hex::encode(key)
}

/// The sort key a [`cursor`] names; a malformed one is a 400 `invalid_cursor`.
pub fn parse_cursor(cursor: &str) -> Result<Vec<u8>> {
    let invalid = || AppError::Invalid {
        code: "invalid_cursor",
        message: "cursor must be a next_cursor this route returned".into(),
    };
    if cursor.is_empty() || cursor.len() > MAX_CURSOR_CHARS {
        return Err(invalid());
    }
    hex::decode(cursor).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_item_is_taken_whatever_its_size_and_later_ones_within_the_budget() {
        let mut budget = Budget::new(Bounds {
            limit: 10,
            max_bytes: 100,
        });
        assert!(budget.take(1_000));
        assert!(!budget.take(1), "the first item used the budget up");
        assert!(budget.truncated() && budget.stopped());

        let mut budget = Budget::new(Bounds {
            limit: 2,
            max_bytes: 100,
        });
        assert!(budget.take(40) && budget.take(60));
        assert!(!budget.take(0), "full by count");
        assert!(budget.full() && !budget.truncated());
    }

    #[test]
    fn a_cursor_names_a_key_and_a_hostile_one_is_refused() {
        assert_eq!(parse_cursor(&cursor(b"esc_1\0x")).unwrap(), b"esc_1\0x");
        for bad in ["", "zz", "abc", &"00".repeat(MAX_CURSOR_CHARS)] {
            assert!(matches!(
                parse_cursor(bad),
                Err(AppError::Invalid {
                    code: "invalid_cursor",
                    ..
                })
            ));
        }
    }

    #[test]
    fn rows_after_a_key_come_in_pages_with_nothing_skipped_or_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for name in ["a", "b", "b\0x", "c", "d"] {
            store
                .put_raw(
                    Table::Credentials,
                    &[b"t\0", name.as_bytes()].concat(),
                    b"v",
                )
                .unwrap();
        }
        store.put_raw(Table::Credentials, b"u\0a", b"v").unwrap();
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (rows, next) =
                rows_after(&store, Table::Credentials, b"t\0", after.as_deref(), 2).unwrap();
            assert!(rows.len() <= 2);
            seen.extend(rows.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "b\0x", "c", "d"]);
    }

    #[test]
    fn a_query_limit_is_clamped() {
        assert_eq!(Bounds::from_query(None, 100, 1000).limit, 100);
        assert_eq!(Bounds::from_query(Some(0), 100, 1000).limit, 1);
        assert_eq!(Bounds::from_query(Some(usize::MAX), 100, 1000).limit, 1000);
    }
}
