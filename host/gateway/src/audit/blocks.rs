//! Block storage: a tenant's records in LZ4-compressed blocks of consecutive records, keyed by
//! tenant and first seq, and lazy reads of them.

#[allow(unused_imports)]
use super::*;

/// Most records stored in one block (one store value).
pub(crate) const BLOCK_RECORDS: usize = 16;

/// A block closes before its records' stored JSON would pass this many bytes (a record alone
/// may reach [`MAX_RECORD_BYTES`]), so every block the writer makes is under
/// [`MAX_BLOCK_BYTES`] whatever its records hold.
pub(crate) const BLOCK_TARGET_BYTES: usize = 4 << 20;

/// Largest decompressed block a stored size prefix is believed for. Above any block the writer
/// makes, and above the 16 records of up to ~2 MiB each that writers before blocks closed by
/// size could put in one, so those stay readable. A corrupt prefix cannot make a reader
/// allocate more.
pub(crate) const MAX_BLOCK_BYTES: usize = 64 << 20;

/// Consecutive records (seq, stored JSON) cut into blocks: at most [`BLOCK_RECORDS`] records,
/// and a block holding more than one keeps under [`BLOCK_TARGET_BYTES`].
pub(crate) fn blocks(records: &[(u64, Vec<u8>)]) -> impl Iterator<Item = &[(u64, Vec<u8>)]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut end = 0;
        while end < rest.len() && end < BLOCK_RECORDS {
            let next = rest[end].1.len() + 1;
            if end > 0 && bytes + next > BLOCK_TARGET_BYTES {
                break;
            }
            bytes += next;
            end += 1;
        }
        let (block, tail) = rest.split_at(end);
        rest = tail;
        Some(block)
    })
}

/// A block's stored form: the records' stored JSON joined by `\n`, compressed with LZ4 after a
/// little-endian `u32` of the uncompressed size. Records repeat their field names and share
/// most values, so this stores a few times fewer bytes, and sled copies each several times.
pub(crate) fn encode_block<'a>(records: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut joined = Vec::with_capacity(records.clone().map(|r| r.len() + 1).sum());
    for (i, record) in records.enumerate() {
        if i > 0 {
            joined.push(b'\n');
        }
        joined.extend_from_slice(record);
    }
    lz4_flex::block::compress_prepend_size(&joined)
}

/// The records' stored JSON joined by `\n`, from a block's stored form; `None` if it is not one.
pub(crate) fn decode_block(stored: &[u8]) -> Option<Vec<u8>> {
    let (size, compressed) = stored.split_first_chunk::<4>()?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > MAX_BLOCK_BYTES {
        return None;
    }
    lz4_flex::block::decompress(compressed, size).ok()
}

/// [`decode_block`] for readers that need the block: a block that does not decode is corrupt.
pub(crate) fn decoded_block(stored: &[u8]) -> std::result::Result<Vec<u8>, StoreError> {
    decode_block(stored).ok_or(StoreError::Inconsistent(
        "an audit block is not LZ4 data of its stated size",
    ))
}

/// Key of the block of `tenant`'s records that starts at `first_seq`.
pub(crate) fn block_key(tenant_id: &str, first_seq: u64) -> Vec<u8> {
    tenant_key(tenant_id, &[&first_seq.to_be_bytes()])
}

pub(crate) fn block_first_seq(key: &[u8]) -> u64 {
    key.get(key.len().saturating_sub(8)..)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_be_bytes)
}

/// A tenant's stored records from `from_seq` on, in order, each as its seq by position (block
/// start + index) and its stored JSON. Read lazily, block by block, for scans of any size.
/// Positions are what the store says; [`crate::verify`] checks them against the records.
pub fn stored_records(
    store: &Store,
    tenant_id: &str,
    from_seq: u64,
) -> impl Iterator<Item = std::result::Result<(u64, Vec<u8>), StoreError>> + use<> {
    type Item = std::result::Result<(u64, Vec<u8>), StoreError>;
    type Block = std::result::Result<(Vec<u8>, Vec<u8>), StoreError>;
    let prefix = tenant_prefix(tenant_id);
    // From the block holding `from_seq` (the last one starting at or before it).
    let blocks: Box<dyn Iterator<Item = Block>> =
        match store.last_at_or_before(Table::Audit, &prefix, &block_key(tenant_id, from_seq)) {
            Ok(found) => {
                let start = found.map_or_else(|| block_key(tenant_id, 0), |(key, _)| key);
                Box::new(store.iter_prefix_from(Table::Audit, &prefix, &start))
            }
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
    blocks.flat_map(move |block| -> Vec<Item> {
        let (key, bytes) = match block {
            Ok(block) => block,
            Err(e) => return vec![Err(e)],
        };
        let first = block_first_seq(&key);
        // A block that does not decode is one position of bytes that are not a record, for
        // `verify` to report; it cannot say how many records it held.
        let Some(bytes) = decode_block(&bytes) else {
            return vec![Ok((first, bytes))];
        };
        bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, line)| (first.saturating_add(i as u64), line))
            .filter(|(seq, _)| *seq >= from_seq)
            .map(|(seq, line)| Ok((seq, line.to_vec())))
            .collect()
    })
}

/// The stored JSON of record `seq`, as the store holds it (block start + index), if any.
/// Neither this nor [`replace_stored_record`] goes through the chain: they are for forensic
/// tools and for tests that tamper with a stopped gateway's store.
pub fn stored_record(store: &Store, tenant_id: &str, seq: u64) -> Result<Option<Vec<u8>>> {
    Ok(stored_records(store, tenant_id, seq)
        .next()
        .transpose()?
        .filter(|(at, _)| *at == seq)
        .map(|(_, bytes)| bytes))
}

/// Replaces (with `Some`) or removes (with `None`) the stored JSON at position `seq`, in place,
/// without re-chaining anything. See [`stored_record`].
pub fn replace_stored_record(
    store: &Store,
    tenant_id: &str,
    seq: u64,
    bytes: Option<&[u8]>,
) -> Result<()> {
    let Some((key, block)) = store.last_at_or_before(
        Table::Audit,
        &tenant_prefix(tenant_id),
        &block_key(tenant_id, seq),
    )?
    else {
        return Ok(());
    };
    let at = seq - block_first_seq(&key);
    let block = decoded_block(&block)?;
    let lines: Vec<&[u8]> = block
        .split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| match (i as u64 == at, bytes) {
            (false, _) => Some(line),
            (true, replacement) => replacement,
        })
        .collect();
    if lines.is_empty() {
        store.remove(Table::Audit, &key)?;
    } else {
        store.put_raw(Table::Audit, &key, &encode_block(lines.into_iter()))?;
    }
    Ok(())
}
