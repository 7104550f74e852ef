//! The credential vault: tenants' downstream secrets, encrypted at rest with
//! XChaCha20-Poly1305 under the gateway's master key.
//!
//! The master key comes from `WRIT_MASTER_KEY` (64 hex digits) or `<data-dir>/master.key`
//! (created, mode 0600, on first start). Each secret is sealed with a fresh random 24-byte
//! nonce and the tenant and credential name as associated data, so a sealed value moved to
//! another tenant or name does not open. No route returns a secret; they are only opened to be
//! injected into a downstream request.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::store::{Remove, Store, StoreError, Table, Write};
use crate::tenants::{tenant_key, tenant_prefix};

/// Errors of the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The master key is missing or malformed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// The credential name or secret is unusable.
    #[error("{0}")]
    Invalid(&'static str),
    /// A sealed value did not open: wrong master key, or it was altered or moved.
    #[error("credential `{0}` could not be decrypted")]
    Unsealable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The master key: from the environment's hex, else the data dir's file (created if absent).
pub fn master_key(
    data_dir: &Path,
    from_env: Option<&str>,
) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let parse = |hex_key: &str| {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key.trim(), key.as_mut())
            .map_err(|e| VaultError::MasterKey(format!("expected 64 hex digits: {e}")))?;
        Ok(key)
    };
    if let Some(hex_key) = from_env {
        return parse(hex_key);
    }
    let path = data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(key.as_mut());
            let hex_key = Zeroizing::new(hex::encode(key.as_ref()));
            crate::server::write_private(&path, hex_key.as_bytes())
                .map_err(|e| VaultError::MasterKey(format!("{e:#}")))?;
            Ok(key)
        }
        Err(e) => Err(VaultError::MasterKey(format!("{}: {e}", path.display()))),
    }
}

/// Sealed credentials in the store. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    store: Store,
    cipher: XChaCha20Poly1305,
}

fn aad(tenant_id: &str, name: &str) -> Vec<u8> {
    crate::store::key(&[tenant_id.as_bytes(), name.as_bytes()])
}

/// A webhook secret's associated data: no credential name is empty, so it never opens as one.
fn webhook_aad(tenant_id: &str) -> Vec<u8> {
    crate::store::key(&[tenant_id.as_bytes(), b"", b"webhook"])
}

fn valid_credential_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Most origins one credential may name.
pub const MAX_ORIGINS: usize = 16;

/// Each origin as `scheme://host[:port]` (the default port left out); one with a path, a
/// query, credentials or another scheme than http(s) is refused.
fn normalize_origins(origins: &[String]) -> Result<Vec<String>, VaultError> {
    const USAGE: &str =
        "origins must be 1 to 16 http(s) origins such as https://api.github.com, without a path";
    if origins.is_empty() || origins.len() > MAX_ORIGINS {
        return Err(VaultError::Invalid(USAGE));
    }
    let mut out = Vec::with_capacity(origins.len());
    for origin in origins {
        let url = reqwest::Url::parse(origin).map_err(|_| VaultError::Invalid(USAGE))?;
        let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || !bare
        {
            return Err(VaultError::Invalid(USAGE));
        }
        let normalized = url.origin().ascii_serialization();
        if !out.contains(&normalized) {
            out.push(normalized);
        }
    }
    Ok(out)
}

impl Vault {
    /// A vault over `store` sealed with `master_key`.
    pub fn new(store: Store, master_key: &[u8; 32]) -> Self {
        Self {
            store,
            cipher: XChaCha20Poly1305::new(master_key.into()),
        }
    }

    /// Seals and stores a tenant's credential with the origins it may be sent to (e.g.
    /// `https://api.github.com`), replacing any of the same name; returns the origins as stored
    /// (normalized).
    pub fn put(
        &self,
        tenant_id: &str,
        name: &str,
        secret: &str,
        origins: &[String],
    ) -> Result<Vec<String>, VaultError> {
        let (rows, origins) = self.rows(tenant_id, name, secret, origins)?;
        self.store.commit(&rows)?;
        Ok(origins)
    }

    /// The rows that store a credential (sealed) and its origins, to commit with the record of
    /// the change; and the origins normalized.
    pub fn rows(
        &self,
        tenant_id: &str,
        name: &str,
        secret: &str,
        origins: &[String],
    ) -> Result<(Vec<Write>, Vec<String>), VaultError> {
        if !valid_credential_name(name) {
            return Err(VaultError::Invalid(
                "credential name must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        if secret.is_empty() || secret.len() > 16 << 10 || secret.contains(['\r', '\n']) {
            return Err(VaultError::Invalid(
                "secret must be 1 byte to 16 KiB with no line breaks",
            ));
        }
        let origins = normalize_origins(origins)?;
        let value = self.seal(secret, &aad(tenant_id, name), name)?;
        let key = tenant_key(tenant_id, &[name.as_bytes()]);
        let rows = vec![
            (
                Table::CredentialOrigins,
                key.clone(),
                serde_json::to_vec(&origins).expect("strings serialize"),
            ),
            (Table::Credentials, key, value),
        ];
        Ok((rows, origins))
    }

    /// The rows of a credential, to remove with the record of its deletion.
    pub fn keys(tenant_id: &str, name: &str) -> Vec<Remove> {
        let key = tenant_key(tenant_id, &[name.as_bytes()]);
        vec![
            (Table::Credentials, key.clone()),
            (Table::CredentialOrigins, key),
        ]
    }

    /// The row that stores a tenant's webhook signing secret, sealed, to commit with the
    /// record of the change.
    pub fn webhook_row(&self, tenant_id: &str, secret: &str) -> Result<Write, VaultError> {
        let value = self.seal(secret, &webhook_aad(tenant_id), "webhook secret")?;
        Ok((Table::WebhookSecrets, tenant_id.as_bytes().to_vec(), value))
    }

    /// `plain` sealed under a fresh random nonce with `aad`: nonce ‖ ciphertext.
    fn seal(&self, plain: &str, aad: &[u8], what: &str) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| VaultError::Unsealable(what.to_owned()))?;
        let mut value = nonce.to_vec();
        value.extend_from_slice(&sealed);
        Ok(value)
    }

    /// The row of a tenant's webhook secret, to remove with the record of its removal.
    pub fn webhook_key(tenant_id: &str) -> Remove {
        (Table::WebhookSecrets, tenant_id.as_bytes().to_vec())
    }

    /// Opens a tenant's webhook signing secret, if it has one.
    pub fn open_webhook(&self, tenant_id: &str) -> Result<Option<Zeroizing<String>>, VaultError> {
        let Some(value) = self
            .store
            .get_raw(Table::WebhookSecrets, tenant_id.as_bytes())?
        else {
            return Ok(None);
        };
        self.unseal(&value, &webhook_aad(tenant_id), "webhook secret")
            .map(Some)
    }

    fn unseal(
        &self,
        value: &[u8],
        aad: &[u8],
        what: &str,
    ) -> Result<Zeroizing<String>, VaultError> {
        if value.len() < 24 {
            return Err(VaultError::Unsealable(what.to_owned()));
        }
        let (nonce, sealed) = value.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| VaultError::Unsealable(what.to_owned()))?;
        String::from_utf8(plain)
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Unsealable(what.to_owned()))
    }

    /// The origins a tenant's credential may be sent to; `None` if there is no such
    /// credential. A credential stored before origins existed has none: it is sent nowhere.
    pub fn origins(&self, tenant_id: &str, name: &str) -> Result<Option<Vec<String>>, VaultError> {
        let key = tenant_key(tenant_id, &[name.as_bytes()]);
        if self.store.get_raw(Table::Credentials, &key)?.is_none() {
            return Ok(None);
        }
        Ok(Some(
            self.store
                .get(Table::CredentialOrigins, &key)?
                .unwrap_or_default(),
        ))
    }

    /// Opens a tenant's credential, to inject it into a downstream request.
    pub fn open(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<Zeroizing<String>>, VaultError> {
        let Some(value) = self.store.get_raw(
            Table::Credentials,
            &tenant_key(tenant_id, &[name.as_bytes()]),
        )?
        else {
            return Ok(None);
        };
        self.unseal(&value, &aad(tenant_id, name), name).map(Some)
    }

    /// The names of a tenant's credentials (never their values).
    pub fn names(&self, tenant_id: &str) -> Result<Vec<String>, VaultError> {
        let prefix = tenant_prefix(tenant_id);
        Ok(self
            .store
            .scan_keys(Table::Credentials, &prefix)?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    /// A page of a tenant's credential names in order, strictly after `after`: at most
    /// `limit`, and the name the next page starts after.
    #[allow(clippy::type_complexity)]
    pub fn names_page(
        &self,
        tenant_id: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<Vec<u8>>), VaultError> {
        let (rows, next) = crate::page::rows_after(
            &self.store,
            Table::Credentials,
            &tenant_prefix(tenant_id),
            after,
            limit,
        )?;
        let names = rows
            .into_iter()
            .map(|(name, _)| String::from_utf8_lossy(&name).into_owned())
            .collect();
        Ok((names, next))
    }

    /// Removes a tenant's credential; `false` if there was none.
    pub fn delete(&self, tenant_id: &str, name: &str) -> Result<bool, VaultError> {
        let key = tenant_key(tenant_id, &[name.as_bytes()]);
        let existed = self.store.get_raw(Table::Credentials, &key)?.is_some();
        self.store.remove(Table::Credentials, &key)?;
        self.store.remove(Table::CredentialOrigins, &key)?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(dir: &Path, key: [u8; 32]) -> Vault {
        Vault::new(Store::open(dir).unwrap(), &key)
    }

    #[test]
    fn secrets_round_trip_and_are_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path(), [1; 32]);
        v.put(
            "ten_a",
            "github",
            "ghp_supersecret",
            &["https://api.github.com".into()],
        )
        .unwrap();
        assert_eq!(
            v.open("ten_a", "github").unwrap().unwrap().as_str(),
            "ghp_supersecret"
        );
        assert_eq!(v.names("ten_a").unwrap(), ["github"]);
        assert!(
            v.open("ten_b", "github").unwrap().is_none(),
            "tenants are apart"
        );
        v.store.flush().unwrap();
        drop(v);
        for entry in walk(dir.path()) {
            let bytes = std::fs::read(entry).unwrap();
            assert!(!bytes.windows(11).any(|w| w == b"supersecret"));
        }
    }

    #[test]
    fn sealed_value_moved_or_opened_with_another_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path(), [1; 32]);
        v.put(
            "ten_a",
            "github",
            "s3cret",
            &["https://api.github.com".into()],
        )
        .unwrap();
        let sealed = v
            .store
            .get_raw(Table::Credentials, &tenant_key("ten_a", &[b"github"]))
            .unwrap()
            .unwrap();
        v.store
            .put_raw(
                Table::Credentials,
                &tenant_key("ten_b", &[b"github"]),
                &sealed,
            )
            .unwrap();
        assert!(matches!(
            v.open("ten_b", "github"),
            Err(VaultError::Unsealable(_))
        ));
        let other = Vault::new(v.store.clone(), &[2; 32]);
        assert!(matches!(
            other.open("ten_a", "github"),
            Err(VaultError::Unsealable(_))
        ));
        assert!(v.delete("ten_a", "github").unwrap());
        assert!(v.open("ten_a", "github").unwrap().is_none());
    }

    #[test]
    fn a_credential_names_the_origins_it_may_be_sent_to() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path(), [1; 32]);
        let stored = v
            .put(
                "ten_a",
                "github",
                "s",
                &[
                    "https://API.github.com:443".into(),
                    "http://127.0.0.1:8080".into(),
                ],
            )
            .unwrap();
        assert_eq!(stored, ["https://api.github.com", "http://127.0.0.1:8080"]);
        assert_eq!(v.origins("ten_a", "github").unwrap(), Some(stored));
        assert_eq!(v.origins("ten_a", "other").unwrap(), None);
        for bad in [
            vec![],
            vec!["https://api.github.com/repos".to_owned()],
            vec!["ftp://files.example".to_owned()],
            vec!["https://user:pw@api.github.com".to_owned()],
            vec!["api.github.com".to_owned()],
        ] {
            assert!(
                matches!(v.put("ten_a", "x", "s", &bad), Err(VaultError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(v.delete("ten_a", "github").unwrap());
        assert_eq!(v.origins("ten_a", "github").unwrap(), None);
    }

    #[test]
    fn master_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = master_key(dir.path(), None).unwrap();
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(*master_key(dir.path(), None).unwrap(), *first);
        let env = hex::encode([7u8; 32]);
        assert_eq!(*master_key(dir.path(), Some(&env)).unwrap(), [7u8; 32]);
        assert!(master_key(dir.path(), Some("nope")).is_err());
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
