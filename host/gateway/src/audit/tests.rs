//! The audit log's unit tests.

use super::*;

fn body() -> RecordBody {
    RecordBody {
        action: Some("payments.initiate".into()),
        actor: None,
        agent_id: Some("agent-1".into()),
        arguments: Some(r#"{"amount":50}"#.into()),
        charges: vec![RecordCharge {
            amount: "50".into(),
            counter: "spend:GBP".into(),
        }],
        client_hint: Some("ALLOW".into()),
        codes: vec![],
        detail: None,
        escalation_id: None,
        event_id: "evt_1".into(),
        fuel: Some(7),
        key_id: Some(Some("key_1".into())),
        key_subject: Some(Some("agent@example.com".into())),
        kind: "decision".into(),
        latency_us: Some(12),
        outcome: Some("ALLOW".into()),
        policy_id: Some("ab".into()),
        prev_hash: "00".repeat(32),
        reason: Some("ok \"quoted\" é\n".into()),
        seq: 0,
        session_id: Some("s".into()),
        tenant_id: "ten_1".into(),
        timestamp_ms: 1,
        version: Some(RECORD_VERSION),
    }
}

#[test]
fn a_writer_event_id_names_its_seq_in_lowercase_hex() {
    for seq in [0, 1, 0xabc, u64::MAX] {
        let id = event_id_for(seq);
        assert_eq!(id.len(), 36, "{id}");
        assert!(
            id[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(&id[4..20], format!("{seq:016x}"));
        assert_eq!(event_id_seq(&id), Some(seq));
    }
    assert_ne!(event_id_for(7), event_id_for(7), "the random half differs");
}

#[test]
fn canonical_encoding_has_sorted_keys_and_no_whitespace() {
    let bytes = body().canonical();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with(r#"{"action":"payments.initiate","actor":null,"#),
        "{text}"
    );
    assert!(!text.contains(": ") && !text.contains(", "));
    assert!(text.contains(r#""reason":"ok \"quoted\" é\n""#), "{text}");
}

#[test]
fn hash_covers_prev_hash_and_every_field() {
    let b = body();
    let h = b.hash(&[0; 32]);
    assert_ne!(h, b.hash(&[1; 32]));
    let mut changed = b.clone();
    changed.fuel = Some(8);
    assert_ne!(h, changed.hash(&[0; 32]));
    let mut expected = blake3::Hasher::new();
    expected.update(&[0; 32]);
    expected.update(&b.canonical());
    assert_eq!(&h, expected.finalize().as_bytes());
}

fn call(session: &str, n: u64) -> RecordBody {
    let mut r = RecordBody::new(Kind::Decision);
    r.action = Some("payments.initiate".into());
    r.session_id = Some(session.into());
    r.arguments = Some(format!(r#"{{"amount":{n}}}"#));
    r.outcome = Some("ALLOW".into());
    r
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.body.seq).collect()
}

#[tokio::test]
async fn blocks_event_ids_and_sessions_read_back_across_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    let mut items: Vec<(String, RecordBody, Effects)> = (0..40)
        .map(|n| {
            let session = if n % 2 == 0 { "even" } else { "odd" };
            ("ten_a".to_owned(), call(session, n), Effects::default())
        })
        .collect();
    items.extend((0..5).map(|n| ("ten_b".to_owned(), call("even", n), Effects::default())));
    let mut chosen = call("odd", 99);
    chosen.event_id = format!("evt_{}", "ab".repeat(16));
    items.push(("ten_a".to_owned(), chosen, Effects::default()));
    let written: Vec<Record> = log
        .write_batch(items)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // 41 records of ten_a: blocks of 16, 16 and 9.
    let blocks = store
        .iter_raw(Table::Audit, b"ten_a\0", b"ten_a\x01")
        .count();
    assert_eq!(blocks, 3);

    assert_eq!(
        seqs(&log.records("ten_a", None, 100).unwrap()),
        (0..41).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&log.records("ten_a", Some(14), 4).unwrap()),
        [15, 16, 17, 18]
    );
    assert_eq!(
        seqs(&log.records("ten_b", None, 100).unwrap()),
        [0, 1, 2, 3, 4]
    );

    let odd = log.session_records("ten_a", "odd", None, 100).unwrap();
    assert_eq!(odd.len(), 21);
    assert!(
        odd.iter()
            .all(|r| r.body.session_id.as_deref() == Some("odd"))
    );
    assert_eq!(
        seqs(&log.session_records("ten_a", "odd", Some(35), 2).unwrap()),
        [37, 39]
    );
    assert!(
        log.session_records("ten_b", "odd", None, 100)
            .unwrap()
            .is_empty()
    );

    let a30 = &written[30];
    let found = log.event("ten_a", &a30.body.event_id).unwrap().unwrap();
    assert_eq!(found, *a30);
    assert_eq!(
        log.event("ten_b", &a30.body.event_id).unwrap(),
        None,
        "another tenant's"
    );
    let forged = format!("{}{}", &a30.body.event_id[..20], "0".repeat(16));
    assert_eq!(
        log.event("ten_a", &forged).unwrap(),
        None,
        "the seq alone finds nothing"
    );
    assert_eq!(log.event("ten_a", "evt_nope").unwrap(), None);
    assert_eq!(log.event("ten_a", &"ab".repeat(16)).unwrap(), None);
    let chosen = log
        .event("ten_a", &format!("evt_{}", "ab".repeat(16)))
        .unwrap()
        .unwrap();
    assert_eq!(chosen.body.seq, 40);
    assert_eq!(log.event("ten_b", &chosen.body.event_id).unwrap(), None);
}

#[tokio::test]
async fn taking_a_record_out_of_a_block_is_a_missing_seq_and_swapping_two_is_out_of_order() {
    use crate::verify::{Problem, verify_chain};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    let items = (0..20)
        .map(|n| ("ten_a".to_owned(), call("s", n), Effects::default()))
        .collect();
    assert!(log.write_batch(items).iter().all(Result::is_ok));
    assert!(verify_chain(&store, "ten_a", None).unwrap().ok());

    let (seven, eight) = (
        stored_record(&store, "ten_a", 7).unwrap().unwrap(),
        stored_record(&store, "ten_a", 8).unwrap().unwrap(),
    );
    replace_stored_record(&store, "ten_a", 7, Some(&eight)).unwrap();
    replace_stored_record(&store, "ten_a", 8, Some(&seven)).unwrap();
    let broken = verify_chain(&store, "ten_a", None).unwrap().broken.unwrap();
    assert_eq!((broken.seq, broken.problem), (7, Problem::SeqOutOfOrder));

    replace_stored_record(&store, "ten_a", 7, Some(&seven)).unwrap();
    replace_stored_record(&store, "ten_a", 8, Some(&eight)).unwrap();
    assert!(verify_chain(&store, "ten_a", None).unwrap().ok());
    replace_stored_record(&store, "ten_a", 5, None).unwrap();
    let broken = verify_chain(&store, "ten_a", None).unwrap().broken.unwrap();
    assert_eq!((broken.seq, broken.problem), (5, Problem::MissingSeq));
}

#[test]
fn blocks_are_stored_compressed_and_a_corrupt_one_does_not_decode() {
    let record = br#"{"seq":1,"kind":"decision","tenant_id":"ten_a","action":"payments.initiate"}"#;
    let records = vec![record.as_slice(); 16];
    let stored = encode_block(records.iter().copied());
    let joined = records.join(&b'\n');
    assert!(
        stored.len() * 4 < joined.len(),
        "{} of {}",
        stored.len(),
        joined.len()
    );
    assert_eq!(decode_block(&stored), Some(joined));

    let mut flipped = stored.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    let mut huge = stored.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    for corrupt in [
        &flipped[..],
        &huge[..],
        &stored[..3],
        &stored[..stored.len() / 2],
        b"",
    ] {
        assert_ne!(decode_block(corrupt), Some(records.join(&b'\n')));
    }
    assert_eq!(
        decode_block(&huge),
        None,
        "a size past the bound is refused"
    );
    assert_eq!(decode_block(&stored[..3]), None);
}

#[tokio::test]
async fn a_block_that_does_not_decode_is_reported_by_verify_not_raised() {
    use crate::verify::{Problem, verify_chain};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    for from in [0, 10] {
        let items = (from..from + 10)
            .map(|n| ("ten_a".to_owned(), call("s", n), Effects::default()))
            .collect();
        assert!(log.write_batch(items).iter().all(Result::is_ok));
    }
    assert!(verify_chain(&store, "ten_a", None).unwrap().ok());
    // The second batch's block (seqs 10 to 19), overwritten with bytes that are not LZ4.
    store
        .put_raw(
            Table::Audit,
            &block_key("ten_a", 10),
            b"\x10\0\0\0not lz4 at all",
        )
        .unwrap();
    let broken = verify_chain(&store, "ten_a", None).unwrap().broken.unwrap();
    assert_eq!((broken.seq, broken.problem), (10, Problem::Undecodable));
    // Reading a record from it is an error, never a wrong record.
    assert!(log.chains.record_at("ten_a", 12).is_err());
    assert_eq!(
        log.chains.record_at("ten_a", 3).unwrap().unwrap().body.seq,
        3
    );
}

#[tokio::test]
async fn the_session_index_is_written_out_a_session_at_a_time_and_rebuilt_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |from: u64| -> Vec<(String, RecordBody, Effects)> {
        (from..from + 4)
            .map(|n| ("ten_a".to_owned(), call("s", n), Effects::default()))
            .collect()
    };
    {
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::start(store.clone());
        log.write_batch(batch(0));
        // Nothing is written out yet.
        assert_eq!(store.get_raw(Table::SessionMarks, b"ten_a").unwrap(), None);
        assert!(
            store
                .iter_raw(Table::Sessions, b"", b"\xff")
                .next()
                .is_none()
        );
        assert_eq!(
            log.session_records("ten_a", "s", None, 100).unwrap().len(),
            4
        );
        std::thread::sleep(SESSION_TAIL_AGE);
        // The next batch writes the session's waiting entries out with it, and the mark.
        log.write_batch(batch(4));
        let mark = store.get_raw(Table::SessionMarks, b"ten_a").unwrap();
        assert_eq!(mark, Some(4u64.to_be_bytes().to_vec()));
        assert_eq!(
            log.session_records("ten_a", "s", None, 100).unwrap().len(),
            8
        );
        // These stay in memory, and are lost with the process.
        log.write_batch(batch(8));
        assert_eq!(
            seqs(&log.session_records("ten_a", "s", Some(5), 100).unwrap()),
            (6..12).collect::<Vec<_>>()
        );
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store);
    log.load_head("ten_a").unwrap();
    assert_eq!(
        seqs(&log.session_records("ten_a", "s", None, 100).unwrap()),
        (0..12).collect::<Vec<_>>(),
        "the entries above the mark are rebuilt from the chain"
    );
}

#[tokio::test]
async fn a_write_out_takes_a_few_sessions_and_the_mark_stops_below_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    let one = |session: String| vec![("ten_a".to_owned(), call(&session, 0), Effects::default())];
    let items = (0..40)
        .map(|n| {
            (
                "ten_a".to_owned(),
                call(&format!("s{n}"), n),
                Effects::default(),
            )
        })
        .collect();
    log.write_batch(items);
    std::thread::sleep(SESSION_TAIL_AGE);
    let mark = || {
        store
            .get_raw(Table::SessionMarks, b"ten_a")
            .unwrap()
            .unwrap()
    };
    let written = || store.iter_raw(Table::Sessions, b"", b"\xff").count();
    log.write_batch(one("late".into()));
    assert_eq!(written(), SESSION_WRITE_OUT);
    assert_eq!(mark(), (SESSION_WRITE_OUT as u64).to_be_bytes());
    std::thread::sleep(SESSION_TAIL_AGE);
    log.write_batch(one("later".into()));
    // The other 8 and "late"; "later" is fresh, so the mark stops at its seq.
    assert_eq!(written(), 41);
    assert_eq!(mark(), 41u64.to_be_bytes());
    for n in [0, 31, 32, 39] {
        let found = log
            .session_records("ten_a", &format!("s{n}"), None, 10)
            .unwrap();
        assert_eq!(seqs(&found), [n]);
    }
}

#[test]
fn escaped_len_is_what_serde_json_writes_for_a_string() {
    for text in [
        "",
        "plain",
        r#"{"a":"\"quoted\"","b":[1,2]}"#,
        "tab\tnewline\nreturn\r\u{8}\u{c}\u{0}\u{1f}\u{7f}",
        "é ünïcode ✓ \\ back",
    ] {
        let json = serde_json::to_string(text).unwrap();
        assert_eq!(escaped_len(text) + 2, json.len(), "{text:?}");
    }
}

#[tokio::test]
async fn a_batch_of_records_near_the_bound_is_cut_into_blocks_that_all_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    // Quotes double when the arguments are stored as a JSON string.
    let quotes = "\"".repeat(MAX_RECORD_BYTES / 2 - 4096);
    let items: Vec<(String, RecordBody, Effects)> = (0..16)
        .map(|n| {
            let mut record = call("s", n);
            record.arguments = Some(quotes.clone());
            ("ten_a".to_owned(), record, Effects::default())
        })
        .collect();
    for written in log.write_batch(items) {
        written.unwrap();
    }
    for block in store.iter_raw(Table::Audit, b"ten_a\0", b"ten_a\x01") {
        let (_, stored) = block.unwrap();
        let size = u32::from_le_bytes(stored[..4].try_into().unwrap()) as usize;
        assert!(size <= BLOCK_TARGET_BYTES.max(MAX_RECORD_BYTES), "{size}");
        assert!(decode_block(&stored).is_some());
    }
    let records = log.records("ten_a", None, 100).unwrap();
    assert_eq!(seqs(&records), (0..16).collect::<Vec<_>>());
    let report = crate::verify::verify_chain(&store, "ten_a", None).unwrap();
    assert!(report.ok(), "{:?}", report.broken);
    assert_eq!(report.records, 16);
}

#[tokio::test]
async fn a_record_over_the_bound_is_refused_and_the_chain_goes_on_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    let mut huge = call("s", 1);
    huge.arguments = Some("\"".repeat(MAX_RECORD_BYTES / 2 + 1));
    let results = log.write_batch(vec![
        ("ten_a".to_owned(), call("s", 0), Effects::default()),
        ("ten_a".to_owned(), huge, Effects::default()),
        ("ten_a".to_owned(), call("s", 2), Effects::default()),
    ]);
    assert!(matches!(
        results[1],
        Err(AuditError::RecordTooLarge {
            limit: MAX_RECORD_BYTES,
            ..
        })
    ));
    let records = log.records("ten_a", None, 10).unwrap();
    assert_eq!(seqs(&records), [0, 1]);
    assert_eq!(
        records[1].body.arguments.as_deref(),
        Some(r#"{"amount":2}"#)
    );
}

#[test]
fn a_format_1_record_reads_and_hashes_as_it_was_written() {
    let mut v1 = body();
    v1.key_id = None;
    v1.key_subject = None;
    v1.version = None;
    let canonical = v1.canonical();
    let text = std::str::from_utf8(&canonical).unwrap();
    assert!(
        !text.contains("key_id") && !text.contains("version"),
        "{text}"
    );
    let stored = stored_bytes(canonical.clone(), &hash_hex(&v1.hash(&[0; 32])));
    let read = decode_record(&stored).unwrap();
    assert_eq!(read.body, v1);
    assert_eq!(read.body.canonical(), canonical);

    let mut v2 = body();
    v2.key_id = Some(None);
    let text = String::from_utf8(v2.canonical()).unwrap();
    assert!(
        text.contains(r#""key_id":null,"key_subject":"agent@example.com","kind""#),
        "{text}"
    );
    assert!(text.ends_with(r#""timestamp_ms":1,"version":2}"#), "{text}");
    let read = decode_record(&stored_bytes(v2.canonical(), "00")).unwrap();
    assert_eq!(read.body, v2, "a null key stays present");
}

#[tokio::test]
async fn after_a_failed_flush_nothing_is_written_or_acknowledged_until_a_flush_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::start(store.clone());
    log.append("ten_a", call("s", 0), Effects::default())
        .await
        .unwrap();
    store.fail_flushes(true);
    let failed = log.append("ten_a", call("s", 1), Effects::default()).await;
    assert!(matches!(failed, Err(AuditError::FlushFailed)), "{failed:?}");
    assert!(log.unhealthy().is_some());
    let refused = log.append("ten_a", call("s", 2), Effects::default()).await;
    assert!(
        matches!(refused, Err(AuditError::FlushFailed)),
        "{refused:?}"
    );
    assert_eq!(
        seqs(&log.records("ten_a", None, 10).unwrap()),
        [0, 1],
        "the refused append wrote nothing"
    );

    store.fail_flushes(false);
    assert_eq!(log.unhealthy(), None, "a flush that works makes it healthy");
    let resumed = log
        .append("ten_a", call("s", 3), Effects::default())
        .await
        .unwrap();
    assert_eq!(resumed.body.seq, 2);
    let verified = crate::verify::verify_chain(&store, "ten_a", None).unwrap();
    assert!(verified.ok(), "{:?}", verified.broken);
}

#[test]
fn a_calls_record_size_is_bounded_without_reading_small_texts_and_exactly_for_large_ones() {
    assert!(call_record_bytes(&["payments.initiate", r#"{"amount":5}"#]) <= MAX_RECORD_BYTES);
    let quotes = "\"".repeat(MAX_RECORD_BYTES / 2);
    assert!(call_record_bytes(&[&quotes]) > MAX_RECORD_BYTES);
    let plain = "a".repeat(MAX_RECORD_BYTES / 2);
    assert!(call_record_bytes(&[&plain]) <= MAX_RECORD_BYTES);
}
