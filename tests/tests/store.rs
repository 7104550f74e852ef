//! The storage boundary on both backends: sled in a temp dir and PostgreSQL in the tests'
//! private cluster answer every read and write the same way.

use rstest::rstest;
use writ_store::{Hold, PgOptions, Store, StoreError, Table};
use writ_tests::postgres::PgCluster;

enum Backend {
    Sled,
    Postgres,
}

struct Opened {
    store: Store,
    _dir: tempfile::TempDir,
}

fn open(backend: Backend) -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let store = match backend {
        Backend::Sled => Store::open(dir.path()).unwrap(),
        Backend::Postgres => {
            let options = PgOptions {
                url: PgCluster::shared().database(),
                hold: Hold::Nothing,
            };
            Store::open_postgres(&options, dir.path()).unwrap()
        }
    };
    Opened { store, _dir: dir }
}

fn rows(keys: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    keys.iter()
        .map(|k| (k.to_vec(), [b"v:".as_slice(), k].concat()))
        .collect()
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::Postgres)]
fn reads_by_key_prefix_and_range_mean_the_same_on_every_backend(#[case] backend: Backend) {
    let Opened { store, _dir } = open(backend);
    let keys: [&[u8]; 7] = [
        b"t1\x00a",
        b"t1\x00b",
        b"t1\x00b\x00",
        b"t1\x00c\xff",
        b"t1\x01",
        b"t2\x00a",
        b"\xff\xff",
    ];
    let writes: Vec<_> = rows(&keys)
        .into_iter()
        .map(|(k, v)| (Table::Jobs, k, v))
        .collect();
    store.commit(&writes).unwrap();
    store
        .put_raw(Table::Catalog, b"t1\x00a", b"other table")
        .unwrap();

    assert_eq!(
        store.get_raw(Table::Jobs, b"t1\x00a").unwrap(),
        Some(b"v:t1\x00a".to_vec())
    );
    assert_eq!(store.get_raw(Table::Jobs, b"t1\x00z").unwrap(), None);
    assert!(store.contains(Table::Catalog, b"t1\x00a").unwrap());
    let t1 = rows(&keys[..4]);
    assert_eq!(store.scan_raw(Table::Jobs, b"t1\x00").unwrap(), t1);
    assert_eq!(
        store.scan_keys(Table::Jobs, b"t1\x00").unwrap(),
        t1.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        store.scan_raw(Table::Jobs, b"\xff").unwrap(),
        rows(&keys[6..])
    );
    assert_eq!(store.scan_raw(Table::Jobs, b"").unwrap().len(), 7);
    assert_eq!(
        store
            .range_raw(Table::Jobs, b"t1\x00b", b"t1\x01", 2)
            .unwrap(),
        rows(&keys[1..3])
    );
    assert_eq!(
        store.last_raw(Table::Jobs, b"t1\x00").unwrap(),
        rows(&keys[3..4]).pop()
    );
    assert_eq!(
        store
            .last_at_or_before(Table::Jobs, b"t1\x00", b"t1\x00b")
            .unwrap(),
        rows(&keys[1..2]).pop()
    );
    assert_eq!(
        store
            .last_at_or_before(Table::Jobs, b"t1\x00b\x01", b"t1\x00b\x01")
            .unwrap(),
        None
    );
    let lazily: Vec<_> = store
        .iter_raw(Table::Jobs, b"t1", b"t2")
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lazily, rows(&keys[..5]));
    let from: Vec<_> = store
        .iter_prefix_from(Table::Jobs, b"t1\x00", b"t1\x00b\x00")
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(from, rows(&keys[2..4]));
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::Postgres)]
fn a_commit_is_all_or_nothing_and_its_last_write_of_a_key_wins(#[case] backend: Backend) {
    let Opened { store, _dir } = open(backend);
    store.put_raw(Table::Jobs, b"gone", b"1").unwrap();
    store
        .commit_with_removes(
            &[
                (Table::Jobs, b"k".to_vec(), b"first".to_vec()),
                (
                    Table::Usage,
                    b"u".to_vec(),
                    2.5f64.to_bits().to_be_bytes().to_vec(),
                ),
                (Table::Jobs, b"k".to_vec(), b"second".to_vec()),
            ],
            &[(Table::Jobs, b"gone".to_vec())],
        )
        .unwrap();
    assert_eq!(
        store.get_raw(Table::Jobs, b"k").unwrap(),
        Some(b"second".to_vec())
    );
    assert_eq!(store.usage(b"u").unwrap(), 2.5);
    assert_eq!(store.usage(b"never").unwrap(), 0.0);
    assert_eq!(store.get_raw(Table::Jobs, b"gone").unwrap(), None);
    store.remove(Table::Jobs, b"k").unwrap();
    assert!(!store.contains(Table::Jobs, b"k").unwrap());
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::Postgres)]
fn a_lazy_scan_reads_past_many_pages_in_order(#[case] backend: Backend) {
    let Opened { store, _dir } = open(backend);
    let writes: Vec<_> = (0u32..1000)
        .map(|i| (Table::Audit, i.to_be_bytes().to_vec(), vec![1; 100]))
        .collect();
    store.commit(&writes).unwrap();
    let keys: Vec<Vec<u8>> = store
        .iter_raw(Table::Audit, &[0; 4], &[0xff; 4])
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(keys.len(), 1000);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn a_database_migrated_by_a_newer_writ_is_refused() {
    let url = PgCluster::shared().database();
    let dir = tempfile::tempdir().unwrap();
    let options = PgOptions {
        url: url.clone(),
        hold: Hold::Nothing,
    };
    drop(Store::open_postgres(&options, dir.path()).unwrap());
    writ_tests::postgres::execute(
        &url,
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (99, 'from_the_future', '2027-01-01T00:00:00Z', '1')",
    );
    let refused = Store::open_postgres(&options, dir.path())
        .err()
        .expect("refused");
    assert!(matches!(refused, StoreError::Schema(_)), "{refused}");
}

#[test]
fn nodes_serve_a_postgres_store_together_and_a_migration_only_into_one_none_serves() {
    let url = PgCluster::shared().database();
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let with = |hold| PgOptions {
        url: url.clone(),
        hold,
    };
    let node_a = Store::open_postgres(&with(Hold::Serving), a.path()).unwrap();
    let node_b = Store::open_postgres(&with(Hold::Serving), b.path()).unwrap();
    let refused = Store::open_postgres(&with(Hold::Alone), c.path())
        .err()
        .expect("refused while nodes serve");
    assert!(matches!(refused, StoreError::Locked(_)), "{refused}");
    // An offline reader needs no lock.
    assert!(Store::open_postgres(&with(Hold::Nothing), c.path()).is_ok());
    drop((node_a, node_b));
    let alone = Store::open_postgres(&with(Hold::Alone), c.path()).unwrap();
    let refused = Store::open_postgres(&with(Hold::Serving), a.path())
        .err()
        .expect("refused while a migration holds it");
    assert!(matches!(refused, StoreError::Locked(_)), "{refused}");
    drop(alone);
}

#[rstest]
#[case::sled(Backend::Sled)]
#[case::postgres(Backend::Postgres)]
fn a_guarded_commit_writes_only_over_what_it_read(#[case] backend: Backend) {
    let Opened { store, _dir } = open(backend);
    let write = |v: &[u8]| vec![(Table::Usage, b"n".to_vec(), v.to_vec())];
    // Expected absent: the first one creates it, a second is refused.
    store
        .commit_guarded(&write(b"1"), &[], &[(Table::Usage, b"n".to_vec(), None)])
        .unwrap();
    let refused = store
        .commit_guarded(&write(b"x"), &[], &[(Table::Usage, b"n".to_vec(), None)])
        .unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused}");
    let refused = store
        .commit_guarded(
            &write(b"x"),
            &[],
            &[(Table::Usage, b"n".to_vec(), Some(b"0".to_vec()))],
        )
        .unwrap_err();
    assert!(matches!(refused, StoreError::Conflict(_)), "{refused}");
    assert_eq!(
        store.get_raw(Table::Usage, b"n").unwrap(),
        Some(b"1".to_vec())
    );

    // Four threads adding one at a time with compare-and-set: none is lost.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut conflicts = 0;
                for _ in 0..25 {
                    loop {
                        let read = store.get_raw(Table::Usage, b"n").unwrap();
                        let n: u64 = std::str::from_utf8(read.as_deref().unwrap())
                            .unwrap()
                            .parse()
                            .unwrap();
                        let next = (n + 1).to_string().into_bytes();
                        match store.commit_guarded(
                            &[(Table::Usage, b"n".to_vec(), next)],
                            &[],
                            &[(Table::Usage, b"n".to_vec(), read)],
                        ) {
                            Ok(()) => break,
                            Err(StoreError::Conflict(_)) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        store.get_raw(Table::Usage, b"n").unwrap(),
        Some(b"101".to_vec())
    );
}
