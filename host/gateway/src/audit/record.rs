//! The record: its fields, canonical encoding and chain hash, its stored form, and the event
//! ids the writer gives.

#[allow(unused_imports)]
use super::*;

/// What kind of event a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    /// A policy decision on a tool call.
    Decision,
    /// A policy was activated.
    PolicyActivated,
    /// A policy was deleted from the tenant's list.
    PolicyDeleted,
    /// A key was created.
    KeyCreated,
    /// A key was revoked.
    KeyRevoked,
    /// A call was escalated and is held for a human.
    EscalationOpened,
    /// A held call was approved, rejected, or expired.
    EscalationResolved,
    /// A downstream job finished (completed or failed).
    JobFinished,
    /// A catalog entry was added or replaced.
    CatalogPut,
    /// A catalog entry was removed.
    CatalogDeleted,
    /// A credential was stored (its name and origins; never the secret).
    CredentialPut,
    /// A credential was removed.
    CredentialDeleted,
    /// The tenant's webhook URLs were set (and a new signing secret issued).
    WebhooksSet,
    /// The tenant's webhooks were removed.
    WebhooksRemoved,
    /// The operator changed the tenant's limits (old and new values).
    TenantLimitsChanged,
    /// A call that was allowed (or approved) finished where it ran, as its caller reports:
    /// whether it failed, the result's size and how long it took (never the result).
    ToolCompleted,
}

impl Kind {
    /// The name stored in `kind`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A charge as recorded: the amount as the decimal text Rust's `Display` gives the `f64`, so
/// verifiers never re-format a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCharge {
    /// Decimal text of the amount.
    pub amount: String,
    pub counter: String,
}

/// The record format this gateway writes. Format 1 (records without `version`) has no
/// `key_id`, `key_subject` or `version`; format 2 has all three, `null` where no key acted.
pub const RECORD_VERSION: u32 = 2;

/// Everything in a record except its hash. **Fields are declared in lexicographic order**: that
/// order is the canonical encoding's key order. Every field of the record's format is always
/// present (`null` when it does not apply); the fields format 1 lacks are absent from its
/// records, so their hashes are what they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    /// The evaluated action.
    pub action: Option<String>,
    /// The key subject who performed a human or administrative action.
    pub actor: Option<String>,
    /// The agent that made the call.
    pub agent_id: Option<String>,
    /// The call's arguments, as the JSON text the gateway received them.
    pub arguments: Option<String>,
    /// Charges recorded with the decision (only on an ALLOW).
    pub charges: Vec<RecordCharge>,
    /// The client's hint (`decision` in the Provenance request); never changes the outcome.
    pub client_hint: Option<String>,
    /// Machine-readable codes.
    pub codes: Vec<String>,
    /// Kind-specific detail, as JSON text (e.g. a created key's id and role).
    pub detail: Option<String>,
    /// The escalation, for escalated calls.
    pub escalation_id: Option<String>,
    /// Unique id of this record (`evt_…`), given to the caller.
    pub event_id: String,
    /// Fuel the policy burned.
    pub fuel: Option<u64>,
    /// The id of the key that acted (the agent's for a call, the reviewer's for a decision, the
    /// admin's or operator's for a change); `null` for the gateway's own acts. Absent in
    /// format 1.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_id: Option<Option<String>>,
    /// Who holds that key (its subject). Absent in format 1.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_subject: Option<Option<String>>,
    /// [`Kind::as_str`].
    pub kind: String,
    /// Evaluation time in microseconds.
    pub latency_us: Option<u64>,
    /// `ALLOW`, `BLOCK` or `ESCALATE`.
    pub outcome: Option<String>,
    /// The policy that decided (blake3 hex of its component).
    pub policy_id: Option<String>,
    /// Hash of the previous record (hex), zeros for the first.
    pub prev_hash: String,
    /// Human-readable reason.
    pub reason: Option<String>,
    /// Position in the tenant's chain, gapless from 0.
    pub seq: u64,
    /// The call's session.
    pub session_id: Option<String>,
    pub tenant_id: String,
    /// When the record was appended, ms since the epoch.
    pub timestamp_ms: u64,
    /// The record format ([`RECORD_VERSION`]); absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// A field that is present (`null` or a value) is `Some`; an absent one stays `None` (the
/// `default`).
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A record of the chain: the body and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The hashed content.
    #[serde(flatten)]
    pub body: RecordBody,
    /// `blake3(prev_hash bytes ‖ canonical(body))`, hex.
    pub hash: String,
}

impl RecordBody {
    /// The canonical bytes: JSON, keys sorted, no whitespace.
    pub fn canonical(&self) -> Vec<u8> {
        // Sized up front (serde_json starts at 128 bytes and doubles): the field names and
        // fixed-size values take about 500 bytes, the free text more with its escapes, and
        // the stored form appends the hash (see `stored_bytes`).
        let text = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + s.len() / 4);
        let capacity = 640
            + 2 * text(&self.arguments)
            + text(&self.reason)
            + text(&self.detail)
            + self.codes.iter().map(|c| c.len() + 3).sum::<usize>();
        let mut out = Vec::with_capacity(capacity);
        serde_json::to_writer(&mut out, self).expect("records serialize");
        out
    }

    /// The record's hash given its `prev_hash`.
    pub fn hash(&self, prev_hash: &[u8; 32]) -> [u8; 32] {
        chain_hash(prev_hash, &self.canonical())
    }
}

impl RecordBody {
    /// A configuration change of `kind` made with the key `key_id` held by `subject`: the
    /// subject is the record's `actor`, and `detail` (a JSON object) gains the `key_id`.
    pub fn configuration(
        kind: Kind,
        key_id: &str,
        subject: &str,
        mut detail: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let mut body = Self::new(kind);
        detail.insert("key_id".into(), key_id.into());
        body.acted_by(key_id, subject);
        body.actor = Some(subject.to_owned());
        body.detail = Some(serde_json::Value::Object(detail).to_string());
        body
    }

    /// Names the key that acted and who holds it.
    pub fn acted_by(&mut self, key_id: &str, subject: &str) {
        self.key_id = Some(Some(key_id.to_owned()));
        self.key_subject = Some(Some(subject.to_owned()));
    }

    /// An empty record of `kind` for [`AuditLog::append`], which fills in `seq`, `prev_hash`,
    /// `tenant_id`, `timestamp_ms` and, unless the caller chose one, `event_id`.
    pub fn new(kind: Kind) -> Self {
        Self {
            action: None,
            actor: None,
            agent_id: None,
            arguments: None,
            charges: Vec::new(),
            client_hint: None,
            codes: Vec::new(),
            detail: None,
            escalation_id: None,
            event_id: String::new(),
            fuel: None,
            key_id: Some(None),
            key_subject: Some(None),
            kind: kind.as_str().to_owned(),
            latency_us: None,
            outcome: None,
            policy_id: None,
            prev_hash: String::new(),
            reason: None,
            seq: 0,
            session_id: None,
            tenant_id: String::new(),
            timestamp_ms: 0,
            version: Some(RECORD_VERSION),
        }
    }
}

/// Largest stored form of one record, bytes. A call is refused before evaluation when its record
/// could be larger ([`call_record_bytes`]); the writer refuses any record that is.
pub const MAX_RECORD_BYTES: usize = 3 << 19;

/// Room kept in a call's record for what the policy and the gateway add after the call is
/// received: reason, codes and charges at their runtime bounds, escaped, and the fixed fields.
const DECISION_RESERVE: usize = 64 << 10;

/// Bytes `s` takes as a JSON string with serde_json's escapes (without the quotes).
pub(crate) fn escaped_len(s: &str) -> usize {
    s.len()
        + s.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
                0..0x20 => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// An upper bound of the stored size of the record a call with these texts makes (its
/// decision, or its opened escalation), whatever the policy answers.
pub fn call_record_bytes(texts: &[&str]) -> usize {
    // No text grows more than sixfold escaped: below that bound, no need to look at the bytes.
    let worst = DECISION_RESERVE + texts.iter().map(|t| 6 * t.len() + 2).sum::<usize>();
    if worst <= MAX_RECORD_BYTES {
        return worst;
    }
    DECISION_RESERVE + texts.iter().map(|t| escaped_len(t) + 2).sum::<usize>()
}

/// The event id the writer gives record `seq`: its seq in hex, so it is found without an
/// index, and 64 random bits, so it is not guessable from the seq.
pub(crate) fn event_id_for(seq: u64) -> String {
    let mut hex = [0u8; 32];
    let bytes = (u128::from(seq) << 64 | u128::from(rand::random::<u64>())).to_be_bytes();
    hex::encode_to_slice(bytes, &mut hex).expect("32 hex digits for 16 bytes");
    let mut id = String::with_capacity(4 + hex.len());
    id.push_str("evt_");
    id.push_str(std::str::from_utf8(&hex).expect("hex is ASCII"));
    id
}

/// The seq an event id names, if the writer made it (see [`event_id_for`]).
pub(crate) fn event_id_seq(event_id: &str) -> Option<u64> {
    let hex = event_id.strip_prefix("evt_")?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&hex[..16], 16).ok()
}

pub(crate) fn decode_record(bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|source| {
        AuditError::Store(StoreError::Corrupt {
            table: Table::Audit,
            source,
        })
    })
}

/// A 32-byte hash as lowercase hex, without allocating (`hex::encode` builds its string a
/// char at a time, on every record's path).
pub(crate) fn hash_hex(hash: &[u8; 32]) -> impl std::ops::Deref<Target = str> + std::fmt::Display {
    blake3::Hash::from_bytes(*hash).to_hex()
}

/// `blake3(prev_hash ‖ canonical bytes)`: a record's hash.
pub(crate) fn chain_hash(prev_hash: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(prev_hash)
        .update(canonical)
        .finalize()
        .as_bytes()
}

/// The stored form of a record: its canonical bytes with `"hash"` added as the last key
/// (exactly what serializing [`Record`] gives, without serializing the body twice).
pub(crate) fn stored_bytes(mut canonical: Vec<u8>, hash: &str) -> Vec<u8> {
    debug_assert_eq!(canonical.last(), Some(&b'}'));
    canonical.pop();
    canonical.extend_from_slice(b",\"hash\":\"");
    canonical.extend_from_slice(hash.as_bytes());
    canonical.extend_from_slice(b"\"}");
    canonical
}

/// The length of [`stored_bytes`] for these canonical bytes.
pub(crate) fn stored_len(canonical: &[u8]) -> usize {
    canonical.len() + ",\"hash\":\"\"".len() + 64
}

/// A stored record's hash as bytes; a malformed one is an error, never a zero hash.
pub(crate) fn decode_hash(hex_hash: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).map_err(|_| {
        AuditError::Store(StoreError::Inconsistent(
            "a stored record's hash is not 32 bytes of hex",
        ))
    })?;
    Ok(out)
}
