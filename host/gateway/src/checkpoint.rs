//! Signed checkpoints of the audit chains, in the C2SP signed-note format (as used by
//! `tlog-checkpoint`), so that truncating a chain, or rewriting it from some point with fresh
//! hashes, is detectable by anyone holding the gateway's public key.
//!
//! A checkpoint's note text is:
//!
//! ```text
//! writ/audit/<tenant_id>
//! <tree size: number of records>
//! <head hash: the hash of record size-1, standard base64 of its 32 bytes>
//! time <ms since the epoch when it was signed>
//! ```
//!
//! followed by a blank line and one signature line: `— <key name> <base64(key id ‖ signature)>`,
//! where the key id is the first 4 bytes of SHA-256(key name ‖ `\n` ‖ 0x01 ‖ public key) and the
//! signature is Ed25519 over the note text (the four lines, each ending in `\n`).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The name the gateway signs checkpoints with.
pub const KEY_NAME: &str = "writ";

/// Errors reading, creating or verifying checkpoints and keys.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The key file could not be read or written.
    #[error("checkpoint key file: {0}")]
    KeyFile(String),
    /// The data dir has no checkpoint key (and a read-only command does not create one).
    #[error("no checkpoint key at {0}: pass the gateway's verifier key with --public-key")]
    NoKey(String),
    /// The note is not a checkpoint of this format.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature by the expected key, or the signature does not verify.
    #[error("checkpoint signature does not verify with key `{0}`")]
    BadSignature(String),
}

/// A checkpoint: the state of one tenant's chain at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tenant_id: String,
    /// Number of records (the head is record `size - 1`).
    pub size: u64,
    /// Hash of record `size - 1`.
    pub head_hash: [u8; 32],
    /// When it was signed, ms since the epoch.
    pub time_ms: u64,
}

impl Checkpoint {
    fn text(&self) -> String {
        format!(
            "writ/audit/{}\n{}\n{}\ntime {}\n",
            self.tenant_id,
            self.size,
            B64.encode(self.head_hash),
            self.time_ms
        )
    }
}

/// The gateway's checkpoint signing key.
pub struct CheckpointSigner {
    key: SigningKey,
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n\x01");
    h.update(public.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

impl CheckpointSigner {
    /// Loads `<data_dir>/checkpoint.key` (32 secret bytes, hex), creating it (mode 0600) on
    /// first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, CheckpointError> {
        let path = data_dir.join("checkpoint.key");
        match Self::load(data_dir) {
            Err(CheckpointError::NoKey(_)) => {
                let mut secret = [0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                crate::server::write_private(&path, hex::encode(secret).as_bytes())
                    .map_err(|e| CheckpointError::KeyFile(format!("{e:#}")))?;
                Ok(Self {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            other => other,
        }
    }

    /// The key whose 32 secret bytes are `hex` (64 hex digits): every node of a store signs
    /// with the same key (`WRIT_CHECKPOINT_KEY`, `--checkpoint-key-file`).
    pub fn from_hex(hex_key: &str) -> Result<Self, CheckpointError> {
        let mut secret = [0u8; 32];
        hex::decode_to_slice(hex_key.trim(), &mut secret).map_err(|e| {
            CheckpointError::KeyFile(format!("the checkpoint key: expected 64 hex digits: {e}"))
        })?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Loads the data dir's key, never creating one: for commands that only read a store.
    pub fn load(data_dir: &Path) -> Result<Self, CheckpointError> {
        let path = data_dir.join("checkpoint.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut secret = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut secret)
                    .map_err(|e| CheckpointError::KeyFile(format!("{}: {e}", path.display())))?;
                Ok(Self {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(CheckpointError::NoKey(path.display().to_string()))
            }
            Err(e) => Err(CheckpointError::KeyFile(format!("{}: {e}", path.display()))),
        }
    }

    /// The verifying key.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The signed note for `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let text = checkpoint.text();
        let signature = self.key.sign(text.as_bytes());
        let mut blob = key_id(KEY_NAME, &self.public_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{text}\n\u{2014} {KEY_NAME} {}\n", B64.encode(blob))
    }
}

/// The note-format verifier key: `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
pub fn verifier_key(public: &VerifyingKey) -> String {
    let mut blob = vec![1u8];
    blob.extend_from_slice(public.as_bytes());
    format!(
        "{KEY_NAME}+{}+{}",
        hex::encode(key_id(KEY_NAME, public)),
        B64.encode(blob)
    )
}

/// Parses a verifier key made by [`verifier_key`].
pub fn parse_verifier_key(vkey: &str) -> Result<VerifyingKey, CheckpointError> {
    let bad = CheckpointError::Malformed("verifier key is not name+id+base64(0x01 ‖ key)");
    let mut parts = vkey.trim().splitn(3, '+');
    let (Some(_name), Some(_id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad);
    };
    let blob = B64
        .decode(b64)
        .map_err(|_| CheckpointError::Malformed("verifier key base64"))?;
    match blob.split_first() {
        Some((1, key)) => key
            .try_into()
            .ok()
            .and_then(|k: [u8; 32]| VerifyingKey::from_bytes(&k).ok())
            .ok_or(bad),
        _ => Err(bad),
    }
}

/// Parses a signed checkpoint and checks its signature with `public`.
pub fn verify(note: &str, public: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
    let (text, signatures) = note.split_once("\n\n").ok_or(CheckpointError::Malformed(
        "no blank line before the signatures",
    ))?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let origin = lines
        .next()
        .ok_or(CheckpointError::Malformed("no origin line"))?;
    let tenant_id = origin
        .strip_prefix("writ/audit/")
        .ok_or(CheckpointError::Malformed(
            "origin is not writ/audit/<tenant>",
        ))?;
    let size = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or(CheckpointError::Malformed("tree size"))?;
    let head_hash: [u8; 32] = lines
        .next()
        .and_then(|l| B64.decode(l).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or(CheckpointError::Malformed("head hash"))?;
    let time_ms = lines
        .next()
        .and_then(|l| l.strip_prefix("time "))
        .and_then(|t| t.parse().ok())
        .ok_or(CheckpointError::Malformed("time line"))?;
    let expected_id = key_id(KEY_NAME, public);
    let verified = signatures.lines().any(|line| {
        let Some(rest) = line.strip_prefix(&format!("\u{2014} {KEY_NAME} ")) else {
            return false;
        };
        let Ok(blob) = B64.decode(rest) else {
            return false;
        };
        blob.len() == 68
            && blob[..4] == expected_id
            && Signature::from_slice(&blob[4..])
                .is_ok_and(|sig| public.verify(text.as_bytes(), &sig).is_ok())
    });
    if !verified {
        return Err(CheckpointError::BadSignature(KEY_NAME.into()));
    }
    Ok(Checkpoint {
        tenant_id: tenant_id.to_owned(),
        size,
        head_hash,
        time_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CheckpointSigner {
        CheckpointSigner {
            key: SigningKey::from_bytes(&[7; 32]),
        }
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            tenant_id: "ten_1".into(),
            size: 42,
            head_hash: [9; 32],
            time_ms: 1_700_000_000_000,
        }
    }

    /// Interop with a maintained implementation of C2SP signed-note (Cloudflare's
    /// `signed_note`, a port of Go's `sumdb/note`): it derives the same verifier key, verifies
    /// Writ's checkpoints, and signs notes Writ verifies.
    #[test]
    fn checkpoints_interoperate_with_an_independent_signed_note_implementation() {
        use base64::Engine as _;
        use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};

        let s = signer();
        let public = s.public_key();
        assert_eq!(
            signed_note::new_ed25519_verifier_key(KEY_NAME, &public),
            verifier_key(&public),
            "the same verifier key"
        );

        let ours = s.sign(&checkpoint());
        let verifiers = VerifierList::new(vec![Box::new(
            StandardVerifier::new(&verifier_key(&public)).unwrap(),
        )]);
        let note = Note::from_bytes(ours.as_bytes()).unwrap();
        let (verified, _) = note.verify(&verifiers).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(note.text(), checkpoint().text().as_bytes());

        let mut private = vec![1u8];
        private.extend_from_slice(s.key.as_bytes());
        let mut public_blob = vec![1u8];
        public_blob.extend_from_slice(public.as_bytes());
        let skey = format!(
            "PRIVATE+KEY+{KEY_NAME}+{:08x}+{}",
            signed_note::key_id(KEY_NAME, &public_blob),
            base64::engine::general_purpose::STANDARD.encode(private)
        );
        let theirs_signer = StandardSigner::new(&skey).unwrap();
        let mut theirs = Note::new(checkpoint().text().as_bytes(), &[]).unwrap();
        theirs.add_sigs(&[&theirs_signer]).unwrap();
        let theirs = String::from_utf8(theirs.to_bytes()).unwrap();
        assert_eq!(theirs, ours, "byte for byte the same note");
        assert_eq!(verify(&theirs, &public).unwrap(), checkpoint());
    }

    #[test]
    fn signed_note_round_trips_and_has_the_documented_form() {
        let s = signer();
        let note = s.sign(&checkpoint());
        let lines: Vec<&str> = note.lines().collect();
        assert_eq!(lines[0], "writ/audit/ten_1");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[3], "time 1700000000000");
        assert_eq!(lines[4], "");
        assert!(lines[5].starts_with("\u{2014} writ "));
        assert_eq!(verify(&note, &s.public_key()).unwrap(), checkpoint());
        let vkey = verifier_key(&s.public_key());
        assert_eq!(parse_verifier_key(&vkey).unwrap(), s.public_key());
    }

    #[test]
    fn altered_note_or_other_key_fails() {
        let s = signer();
        let note = s.sign(&checkpoint());
        let altered = note.replacen("\n42\n", "\n41\n", 1);
        assert!(matches!(
            verify(&altered, &s.public_key()),
            Err(CheckpointError::BadSignature(_))
        ));
        let other = CheckpointSigner {
            key: SigningKey::from_bytes(&[8; 32]),
        };
        assert!(verify(&note, &other.public_key()).is_err());
        assert!(verify("garbage", &s.public_key()).is_err());
    }
}
